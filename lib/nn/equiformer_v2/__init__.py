"""EquiformerV2 blocks: spherical layout and edge frames (:mod:`.so3`), SO(2) convolution
(:mod:`.so2`), activations and norms (:mod:`.act`), and graph attention (:mod:`.attention`)."""
from e3relax.nn.equiformer_v2 import so3, so2, act, attention  # noqa: F401
