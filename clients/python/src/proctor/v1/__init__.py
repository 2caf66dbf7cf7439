"""Generated gRPC stubs for the proctor.v1 API (see scripts/genproto.py)."""
