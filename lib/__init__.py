"""E3Relax toolkit: one-shot equivariant crystal structure relaxation and its baselines.

Sub-packages: :mod:`e3relax.registry` (component registries), :mod:`e3relax.keys` (field names),
:mod:`e3relax.graph` (periodic multi-edge graphs), :mod:`e3relax.nn` (registered blocks and heads),
:mod:`e3relax.models` (architectures), :mod:`e3relax.datasets` (LMDB format and importers),
:mod:`e3relax.metrics`, :mod:`e3relax.engine` (Ignite training), :mod:`e3relax.cli`.
"""
from e3relax.version import __version__
from e3relax.registry import BLOCKS, GRAPHS, HEADS, IMPORTERS, LOSSES, MODELS

__all__ = ["__version__", "BLOCKS", "GRAPHS", "HEADS", "IMPORTERS", "LOSSES", "MODELS"]
