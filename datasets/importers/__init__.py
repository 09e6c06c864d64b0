"""Importers, one module per published layout, each registered in ``IMPORTERS``."""
from e3relax.datasets.importers import poscar_pairs, vasp_dirs  # noqa: F401
from e3relax.datasets.importers import c2db, custom, extxyz, legacy_lmdb, mp, xmno  # noqa: F401
