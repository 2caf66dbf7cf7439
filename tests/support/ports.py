"""Free loopback ports for test processes (the same helpers `proctor bench` uses)."""

from proctor.bench.spawn import free_port, wait_port

__all__ = ["free_port", "wait_port"]
