"""``mp`` and ``mpf_pickle``: the Materials Project (MPF.2021.2.8) pairs used by the authors.

``mp`` reads the authors' CIF layout::

    train.csv  val.csv  test.csv      column ``mp_id``
    CIF/<mp_id>_U.cif                 unrelaxed (first snapshot)
    CIF/<mp_id>_R.cif                 relaxed (last snapshot)

``mpf_pickle`` reads the raw MPF.2021.2.8 pickles (``block_0.p``, ``block_1.p``): each is a dict
``{mp_id: {"structure": [pymatgen Structure, ...], "energy": [eV per cell, ...], "force": [...],
"stress": [...], "id": [...]}}`` with one entry per ionic snapshot of the material's relaxation
calculations. Snapshot ids ``<task>-<calc>-<step>`` give the order; without them the list order is
used. The pair is the first snapshot of the first calculation -> the last snapshot of the last,
and the energy is the last snapshot's energy per atom. Reading them unpickles Python objects, so
``trust_pickle=True`` (``--trust-pickle``) is required. Split files ``{train,val,test}.csv``
(``mp_id``) beside the pickles are honoured.
"""
from __future__ import annotations

import logging
import math
import pickle
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from e3relax.datasets.importers.base import Importer, Item, RawPair, Skipped
from e3relax.datasets.importers.cif_common import file_pair, split_ids
from e3relax.registry import IMPORTERS

__all__ = ["MPImporter", "MPFPickleImporter", "structure_to_atoms"]

logger = logging.getLogger(__name__)

_SNAPSHOT_ID = re.compile(r"-(\d+)-(\d+)$")
PICKLE_SUFFIXES = (".p", ".pkl", ".pickle")


@IMPORTERS.register("mp")
class MPImporter(Importer):
    """Pairs ``CIF/<mp_id>_U.cif`` -> ``CIF/<mp_id>_R.cif`` listed in ``{train,val,test}.csv``."""

    def __init__(self, src: str | Path, *, trust_pickle: bool = False, id_column: str = "mp_id") -> None:
        super().__init__(src, trust_pickle=trust_pickle)
        self._entries = split_ids(self.src, id_column)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Item]:
        cif = self.src / "CIF"
        for mp_id, split in self._entries:
            yield file_pair(mp_id, cif / f"{mp_id}_U.cif", cif / f"{mp_id}_R.cif", split=split)


def structure_to_atoms(structure: Any) -> Any:
    """``ase.Atoms`` from a pymatgen ``Structure`` (or its ``as_dict``), periodic in 3-D.

    Built from the lattice matrix, Cartesian coordinates and species directly, so structures
    pickled by old pymatgen versions (without a lattice ``pbc``) convert too.
    """
    from ase import Atoms

    if isinstance(structure, dict):
        from pymatgen.core import Structure

        structure = Structure.from_dict(structure)
    numbers = [site.specie.Z for site in structure]
    return Atoms(numbers=numbers, positions=np.asarray(structure.cart_coords, float),
                 cell=np.asarray(structure.lattice.matrix, float), pbc=True)


def _snapshot_order(entry: dict, count: int) -> list[int]:
    """Snapshot indices ordered by (calculation, step) parsed from ``entry['id']``, else list order."""
    ids = entry.get("id")
    if isinstance(ids, (list, tuple)) and len(ids) == count:
        keys = [_SNAPSHOT_ID.search(str(s)) for s in ids]
        if all(keys):
            return sorted(range(count), key=lambda i: (int(keys[i].group(1)), int(keys[i].group(2)), i))
    return list(range(count))


@IMPORTERS.register("mpf_pickle")
class MPFPickleImporter(Importer):
    """The raw MPF.2021.2.8 pickles: one pair per material (needs ``trust_pickle``).

    Args:
        src: one pickle file or a folder of ``*.p`` / ``*.pkl`` / ``*.pickle`` files.
        trust_pickle: must be True: reading unpickles Python objects.
        keep_trajectory: also return every snapshot as the trajectory.
    """

    needs_pickle = True

    def __init__(self, src: str | Path, *, trust_pickle: bool = False, keep_trajectory: bool = False) -> None:
        super().__init__(src, trust_pickle=trust_pickle)
        self.keep_trajectory = keep_trajectory
        if self.src.is_dir():
            self._files = sorted(p for p in self.src.iterdir() if p.suffix in PICKLE_SUFFIXES)
            folder = self.src
        else:
            self._files, folder = [self.src], self.src.parent
        if not self._files:
            raise FileNotFoundError(f"mpf_pickle: no {'/'.join(PICKLE_SUFFIXES)} files in '{self.src}'")
        self._splits = dict(split_ids(folder, "mp_id", required=False))

    def __iter__(self) -> Iterator[Item]:
        for path in self._files:
            try:
                with open(path, "rb") as fh:
                    data = pickle.load(fh)  # trusted: constructor refused unless trust_pickle=True
            except Exception as exc:
                yield Skipped(path.name, f"{path}: cannot unpickle ({type(exc).__name__}: {exc})", "unreadable", str(path))
                continue
            if not isinstance(data, dict):
                yield Skipped(path.name, f"{path}: expected a dict of materials, got {type(data).__name__}", "unreadable", str(path))
                continue
            for mp_id, entry in data.items():
                yield self._pair(str(mp_id), entry, path)

    def _pair(self, mp_id: str, entry: Any, path: Path) -> Item:
        try:
            structures = list(entry["structure"])
            if not structures:
                raise ValueError("no snapshots")
            order = _snapshot_order(entry, len(structures))
            frames = [structure_to_atoms(structures[i]) for i in order]
        except Exception as exc:
            return Skipped(mp_id, f"{path}: material {mp_id}: cannot read snapshots ({type(exc).__name__}: {exc})",
                           "unreadable", str(path))
        energy = None
        energies = entry.get("energy") if isinstance(entry, dict) else None
        if energies is not None and len(energies) == len(structures):
            value = float(np.asarray(energies[order[-1]], float).reshape(-1)[0])
            energy = value / len(frames[-1]) if math.isfinite(value) else None
        traj = None
        if self.keep_trajectory and len({len(f) for f in frames}) == 1:
            traj = frames
        return RawPair(mp_id, frames[0], frames[-1], energy=energy, trajectory=traj,
                       split=self._splits.get(mp_id), source=str(path))
