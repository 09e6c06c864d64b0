"""``c2db``: the C2DB 2-D materials pairs as ASE databases (available from the C2DB authors).

Files::

    unrelaxed.db   ASE database of the initial structures
    relaxed.db     ASE database of the relaxed structures
    train.csv  val.csv  test.csv    optional, column ``atoms_id`` (the authors' 6:2:2 split)

Rows are matched by id: the last component of the row's ``folder`` key (the authors' choice),
else its ``uid``, else its ``atoms_id`` key. An unrelaxed row's structure is taken, as the authors
do, from its data ``structure.json``, then ``structure_large_vacuum.json``, then
``unrelaxed.json`` (ASE JSON: ``{"1": {"numbers", "positions", "cell"}}``), else from the row's own
atoms; a relaxed row's structure is the row's atoms. Both sides get ``pbc = (True, True, False)``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from e3relax.datasets.importers.base import Importer, Item, RawPair, Skipped
from e3relax.datasets.importers.cif_common import split_ids
from e3relax.registry import IMPORTERS

__all__ = ["C2DBImporter"]

logger = logging.getLogger(__name__)

UNRELAXED_DATA_KEYS = ("structure.json", "structure_large_vacuum.json", "unrelaxed.json")
PBC_2D = (True, True, False)


def row_id(row: Any) -> str | None:
    """The pairing id of a database row: ``folder`` basename, ``uid`` or ``atoms_id``."""
    kvp = getattr(row, "key_value_pairs", {}) or {}
    folder = kvp.get("folder") or getattr(row, "folder", None)
    if folder:
        return str(folder).rstrip("/").split("/")[-1]
    for key in ("uid", "atoms_id"):
        if kvp.get(key):
            return str(kvp[key])
    return None


def _from_json_dict(d: dict) -> Any:
    from ase import Atoms

    frame = d.get("1", d)
    return Atoms(numbers=np.asarray(frame["numbers"], int), positions=np.asarray(frame["positions"], float),
                 cell=np.asarray(frame["cell"], float), pbc=PBC_2D)


def unrelaxed_atoms(row: Any) -> Any:
    """The initial structure of an unrelaxed-database row (data dicts first, then the row's atoms)."""
    data = row.get("data") or {}
    for key in UNRELAXED_DATA_KEYS:
        if data.get(key) is not None:
            return _from_json_dict(data[key])
    atoms = row.toatoms()
    atoms.pbc = PBC_2D
    return atoms


@IMPORTERS.register("c2db")
class C2DBImporter(Importer):
    """Pairs from ``unrelaxed.db`` and ``relaxed.db`` matched by id, periodic in-plane only.

    Args:
        src: folder holding both databases.
        trust_pickle: unused.
        min_atoms: drop pairs with fewer atoms (the authors used 3); default keeps all.
    """

    def __init__(self, src: str | Path, *, trust_pickle: bool = False, min_atoms: int = 1) -> None:
        super().__init__(src, trust_pickle=trust_pickle)
        self.min_atoms = min_atoms
        for name in ("unrelaxed.db", "relaxed.db"):
            if not (self.src / name).exists():
                raise FileNotFoundError(f"c2db: '{self.src / name}' does not exist")
        self._splits = dict(split_ids(self.src, "atoms_id", required=False))

    def _read(self, name: str, unrelaxed: bool) -> tuple[dict[str, Any], list[Skipped]]:
        from ase.db import connect

        path = self.src / name
        found: dict[str, Any] = {}
        bad: list[Skipped] = []
        for row in connect(str(path)).select():
            rid = row_id(row) or f"row{row.id}"
            try:
                atoms = unrelaxed_atoms(row) if unrelaxed else row.toatoms()
                atoms.pbc = PBC_2D
                found[rid] = atoms
            except Exception as exc:
                bad.append(Skipped(rid, f"{path} row {row.id}: cannot read structure ({type(exc).__name__}: {exc})",
                                   "unreadable", str(path)))
        return found, bad

    def __iter__(self) -> Iterator[Item]:
        unrel, bad_u = self._read("unrelaxed.db", True)
        rel, bad_r = self._read("relaxed.db", False)
        yield from bad_u
        yield from bad_r
        bad_ids = {s.id for s in bad_u + bad_r}
        for rid, atoms_u in unrel.items():
            if rid not in rel:
                if rid not in bad_ids:
                    yield Skipped(rid, f"no row with id '{rid}' in {self.src / 'relaxed.db'}", "missing_partner", str(self.src))
                continue
            if len(atoms_u) < self.min_atoms:
                yield Skipped(rid, f"{len(atoms_u)} atoms < min_atoms={self.min_atoms}", "too_small", str(self.src))
                continue
            yield RawPair(rid, atoms_u, rel[rid], split=self._splits.get(rid), source=str(self.src))
        for rid in rel:
            if rid not in unrel and rid not in bad_ids:
                yield Skipped(rid, f"no row with id '{rid}' in {self.src / 'unrelaxed.db'}", "missing_partner", str(self.src))
