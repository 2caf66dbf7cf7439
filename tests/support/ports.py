"""Free loopback ports for test processes (the same helpers `proctor bench` uses)."""

from server.bench.spawn import free_port, wait_port

__all__ = ["free_port", "wait_port"]
