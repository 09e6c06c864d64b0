"""``custom``: the authors' layout for a user's own data (transfer learning / prediction).

Files::

    train.csv  val.csv  test.csv          column ``atoms_id`` (test.csv optional)
    CIF/<atoms_id>_unrelaxed.cif
    CIF/<atoms_id>_relaxed.cif           may be absent for test ids: prediction only

A test id without a relaxed file becomes a pair with ``relaxed=None``; in train/val a missing
relaxed file is reported as ``missing_partner``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from e3relax.datasets.importers.base import Importer, Item
from e3relax.datasets.importers.cif_common import file_pair, split_ids
from e3relax.registry import IMPORTERS

__all__ = ["CustomImporter"]


@IMPORTERS.register("custom")
class CustomImporter(Importer):
    """Pairs ``CIF/<id>_{unrelaxed,relaxed}.cif`` listed in ``{train,val,test}.csv`` (``atoms_id``).

    Args:
        src: the dataset folder.
        trust_pickle: unused.
        id_column: CSV column holding the ids.
        unlabelled_splits: splits whose relaxed files may be missing (prediction only).
    """

    def __init__(self, src: str | Path, *, trust_pickle: bool = False, id_column: str = "atoms_id",
                 unlabelled_splits: tuple[str, ...] = ("test",)) -> None:
        super().__init__(src, trust_pickle=trust_pickle)
        self.unlabelled_splits = tuple(unlabelled_splits)
        self._entries = split_ids(self.src, id_column)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Item]:
        cif = self.src / "CIF"
        for item_id, split in self._entries:
            yield file_pair(item_id, cif / f"{item_id}_unrelaxed.cif", cif / f"{item_id}_relaxed.cif",
                            split=split, relaxed_optional=split in self.unlabelled_splits)
