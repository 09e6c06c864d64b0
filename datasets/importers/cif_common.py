"""Helpers shared by the file-based importers: reading one structure, split CSVs, and CIF pairs."""
from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Iterable

from e3relax.datasets.importers.base import Item, RawPair, Skipped

__all__ = ["read_structure", "read_id_column", "split_ids", "file_pair", "SPLITS"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def read_structure(path: str | Path, fmt: str | None = None) -> Any:
    """One ``ase.Atoms`` from a file (CIF, POSCAR, extxyz...); the last image if the file has several.

    Raises:
        ValueError: naming the file when ASE cannot read it or it holds no atoms.
    """
    from ase.io import read

    try:
        atoms = read(str(path), format=fmt)
    except Exception as exc:  # ASE raises many types for bad files
        raise ValueError(f"{path}: cannot read structure ({type(exc).__name__}: {exc})") from exc
    if isinstance(atoms, list):
        atoms = atoms[-1] if atoms else None
    if atoms is None or len(atoms) == 0:
        raise ValueError(f"{path}: no atoms in file")
    return atoms


def read_id_column(path: str | Path, column: str) -> list[str]:
    """The values of ``column`` in a CSV file with a header row, stripped, empty ones dropped.

    Raises:
        ValueError: naming the file and its columns when ``column`` is absent.
    """
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise ValueError(f"{path}: no '{column}' column (columns: {reader.fieldnames})")
        return [row[column].strip() for row in reader if (row.get(column) or "").strip()]


def split_ids(folder: Path, column: str, names: Iterable[str] = SPLITS, required: bool = True) -> list[tuple[str, str]]:
    """``(id, split)`` from ``<folder>/<split>.csv`` files that exist, in file order, first split wins.

    Raises:
        FileNotFoundError: if ``required`` and none of the split files exists.
    """
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    found = False
    for split in names:
        path = folder / f"{split}.csv"
        if not path.exists():
            continue
        found = True
        for sid in read_id_column(path, column):
            if sid in seen:
                logger.warning("%s: id '%s' already listed in an earlier split; ignored here", path, sid)
                continue
            seen.add(sid)
            out.append((sid, split))
    if required and not found:
        raise FileNotFoundError(f"{folder}: none of {', '.join(n + '.csv' for n in names)} exists")
    return out


def file_pair(item_id: str, unrelaxed: Path, relaxed: Path, *, split: str | None = None,
              relaxed_optional: bool = False, energy: float | None = None) -> Item:
    """Read a two-file pair into a :class:`RawPair`, or a :class:`Skipped` saying what is wrong."""
    if not unrelaxed.exists():
        return Skipped(item_id, f"unrelaxed file {unrelaxed} is missing", "missing_partner", str(unrelaxed))
    if not relaxed.exists() and not relaxed_optional:
        return Skipped(item_id, f"relaxed file {relaxed} is missing", "missing_partner", str(relaxed))
    try:
        atoms_u = read_structure(unrelaxed)
        atoms_r = read_structure(relaxed) if relaxed.exists() else None
    except ValueError as exc:
        return Skipped(item_id, str(exc), "unreadable", str(unrelaxed))
    return RawPair(item_id, atoms_u, atoms_r, energy=energy, split=split, source=str(unrelaxed.parent))
