"""The built-in dataset: a few hundred CHGNet-relaxed crystal pairs shipped with the package.

Labels are ML-relaxed (CHGNet), not DFT: see ``README.md`` in this folder (:func:`card`).

    >>> from e3relax.datasets import builtin
    >>> builtin.path()        # the shipped extxyz.gz pair file, readable by the 'extxyz' importer
    >>> builtin.load()        # list of RawPair with a seeded 8:1:1 split
    >>> builtin.to_lmdb("data/builtin")   # {train,val,test}.lmdb + report.json via the converter
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["FILENAME", "path", "card", "load", "to_lmdb"]

FILENAME = "builtin_pairs.extxyz.gz"


def path() -> Path:
    """Path of the shipped pair file.

    Raises:
        FileNotFoundError: if the package was installed without its data files.
    """
    p = Path(__file__).resolve().parent / FILENAME
    if not p.exists():
        raise FileNotFoundError(f"built-in dataset file '{p}' is missing; reinstall the package with its data files")
    return p


def card() -> str:
    """The dataset card (README.md)."""
    return (Path(__file__).resolve().parent / "README.md").read_text(encoding="utf-8")


def load(seed: int = 0) -> list:
    """All pairs as :class:`~e3relax.datasets.importers.base.RawPair` with a seeded 8:1:1 split."""
    from e3relax.datasets.importers.extxyz import BuiltinImporter

    return list(BuiltinImporter(seed=seed))


def to_lmdb(out: str | Path, *, seed: int = 0, **convert_options) -> dict:
    """Convert the shipped pairs into LMDB splits in ``out`` with the standard converter.

    Same as ``e3relax data convert builtin --src builtin --out OUT``.

    Args:
        out: output folder.
        seed: seed of the 8:1:1 split.
        **convert_options: passed to :func:`e3relax.datasets.convert.convert` (``workers``,
            ``graph``, ``overwrite``, ``progress``...).

    Returns:
        The conversion report.
    """
    from e3relax.datasets.convert import convert
    from e3relax.datasets.importers.extxyz import BuiltinImporter

    return convert(BuiltinImporter(seed=seed), out, layout="builtin", **convert_options)
