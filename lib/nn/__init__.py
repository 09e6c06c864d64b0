"""Registered neural-network blocks and heads. Each module is imported here explicitly."""
from e3relax.nn import heads  # noqa: F401
