"""Proctor wire contract (generated stubs live in proctor.v1)."""
