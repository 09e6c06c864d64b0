"""Registered neural-network blocks and heads. Each module is imported here explicitly."""
from e3relax.nn import heads  # noqa: F401
from e3relax.nn import common, embedding, lattice, norm, position, radial, scalar_vector  # noqa: F401
from e3relax.nn import egnn, gata, gotennet, hegnn  # noqa: F401
from e3relax.nn import equiformer_v2  # noqa: F401
from e3relax.nn import painn  # noqa: F401
from e3relax.nn import deeprelax  # noqa: F401
