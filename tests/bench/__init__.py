"""Tests of the load harness, `proctor bench`."""
