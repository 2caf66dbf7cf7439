"""Budget store and service tests."""
