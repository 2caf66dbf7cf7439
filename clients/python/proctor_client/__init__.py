"""Python SDK for Proctor."""
