"""Audit: hash-chained event stream, sinks, consumers."""
