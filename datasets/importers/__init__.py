"""Importers, one module per published layout, each registered in ``IMPORTERS``."""
from e3relax.datasets.importers import poscar_pairs, vasp_dirs  # noqa: F401
