"""proctor bench: the load harness."""
