"""Fleet budgets: store interface, embedded and Redis stores, service."""
