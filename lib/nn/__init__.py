"""Registered neural-network blocks and heads. Each module is imported here explicitly."""
