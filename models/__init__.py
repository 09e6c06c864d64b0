"""Registered architectures. Each model module is imported here explicitly so it registers."""
from e3relax.models import dummy, e3relax, relax_net  # noqa: F401
from e3relax.models import egnn, gotennet, hegnn  # noqa: F401
from e3relax.models import deeprelax, equiformer_v2, painn  # noqa: F401
from e3relax.models import volume_prior  # noqa: F401
