"""The Proctor process: gRPC services, stores, audit, CLI."""
