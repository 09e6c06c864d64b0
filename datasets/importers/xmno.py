"""``xmno``: the X-Mn-O layout used by the E3Relax / DeepRelax authors.

Files (all in ``src``, or CIFs in ``src/CIF``)::

    id_prop_train_all.csv  id_prop_val_all.csv  id_prop_test_all.csv   (no header)
    <id>_unrelaxed.cif  <id>_relaxed.cif

Each CSV row is ``<name>,<target>``; names end in ``_relaxed`` or ``_unrelaxed`` (both may be
listed). A row ``X_relaxed`` selects the pair ``X_unrelaxed.cif`` -> ``X_relaxed.cif`` with id ``X``;
the target of the ``_relaxed`` row is kept as the pair's ``energy``. Names without the suffix are
taken as the base id. The split is the file the id comes from.
"""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Iterator

from e3relax.datasets.importers.base import Importer, Item
from e3relax.datasets.importers.cif_common import SPLITS, file_pair
from e3relax.registry import IMPORTERS

__all__ = ["XMnOImporter"]

logger = logging.getLogger(__name__)


def _base_id(name: str) -> tuple[str, bool]:
    """``'X_relaxed' -> ('X', True)``, ``'X_unrelaxed' -> ('X', False)``, ``'X' -> ('X', False)``."""
    if name.endswith("_unrelaxed"):
        return name[: -len("_unrelaxed")], False
    if name.endswith("_relaxed"):
        return name[: -len("_relaxed")], True
    return name, False


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@IMPORTERS.register("xmno")
class XMnOImporter(Importer):
    """Pairs listed in ``id_prop_{train,val,test}_all.csv`` with ``<id>_{unrelaxed,relaxed}.cif``.

    Args:
        src: the dataset folder (``cifs_xmno``).
        trust_pickle: unused (nothing is unpickled).
        target_as_energy: keep the CSV's second column as the pair's energy.
    """

    def __init__(self, src: str | Path, *, trust_pickle: bool = False, target_as_energy: bool = True) -> None:
        super().__init__(src, trust_pickle=trust_pickle)
        self.target_as_energy = target_as_energy
        self._entries = self._read_entries()

    def _read_entries(self) -> list[tuple[str, str, float | None]]:
        entries: dict[str, list] = {}
        found = False
        for split in SPLITS:
            path = self.src / f"id_prop_{split}_all.csv"
            if not path.exists():
                continue
            found = True
            with open(path, newline="", encoding="utf-8-sig") as fh:
                for row in csv.reader(fh):
                    if not row or not row[0].strip():
                        continue
                    base, is_relaxed = _base_id(row[0].strip())
                    entry = entries.setdefault(base, [base, split, None])
                    if is_relaxed and len(row) > 1 and self.target_as_energy:
                        entry[2] = _float(row[1])
        if not found:
            raise FileNotFoundError(f"xmno: no id_prop_{{train,val,test}}_all.csv in '{self.src}'")
        return [tuple(e) for e in entries.values()]

    def __len__(self) -> int:
        return len(self._entries)

    def _cif_dir(self, base: str) -> Path:
        if not (self.src / f"{base}_unrelaxed.cif").exists() and (self.src / "CIF").is_dir():
            return self.src / "CIF"
        return self.src

    def __iter__(self) -> Iterator[Item]:
        for base, split, energy in self._entries:
            folder = self._cif_dir(base)
            yield file_pair(base, folder / f"{base}_unrelaxed.cif", folder / f"{base}_relaxed.cif",
                            split=split, energy=energy)
