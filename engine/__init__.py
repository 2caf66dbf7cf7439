"""Proctor policy engine: pure, no I/O."""
