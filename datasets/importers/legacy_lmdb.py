"""``legacy_lmdb``: the authors' preprocessed LMDBs and OC22-style LMDBs, converted to the safe format.

Both store one pickled PyTorch Geometric ``Data`` per key ``"0"``, ``"1"``, ... (and the count
under ``"length"``) in LMDB files opened with ``subdir=False`` (``data.0000.lmdb`` ...). Reading
them unpickles Python objects, which can run arbitrary code: the importer refuses unless
``trust_pickle=True`` (``--trust-pickle``).

Record kinds, told apart by their fields:

* E3Relax / DeepRelax (``preprocess_*.py``): ``pos_u``, ``cell_u`` [1, 3, 3], ``pos_r``,
  ``cell_r``, ``x`` (atomic numbers as float), ``pbc``, optional ``cif_id`` and target ``y``.
* OC22 (IS2RS): ``pos``, ``cell``, ``atomic_numbers``, ``tags``, ``pos_relaxed``, ``sid``,
  optional ``fixed``. Positions only: the relaxed cell is the input cell. Tags become ASE tags and
  ``fixed`` atoms an ASE ``FixAtoms`` constraint on both sides.

``src`` may be one ``.lmdb`` file, a folder of them, or a dataset root with split folders such as
``train_E3Relax/``, ``val_EquiRelax/``, ``test_DeepRelax/``, ``val_id_E3Relax/``: the split is the
folder name before its ``_<Name>Relax`` suffix (``val_id`` and ``val_ood`` map to ``val``); other
folder names give no split.
"""
from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from e3relax.datasets.importers.base import Importer, Item, RawPair, Skipped
from e3relax.registry import IMPORTERS

__all__ = ["LegacyLmdbImporter", "record_fields"]

logger = logging.getLogger(__name__)

_SPLIT_DIR = re.compile(r"^(train|val|test|val_id|val_ood|test_id|test_ood)(_[A-Za-z0-9]*relax)?$", re.IGNORECASE)
_SKIP_KEYS = {b"length", b"metadata"}


def record_fields(obj: Any) -> dict[str, Any]:
    """The fields of an unpickled record: a PyG ``Data`` (old or new storage) or a plain dict."""
    if isinstance(obj, dict):
        return dict(obj)
    store = obj.__dict__.get("_store") if hasattr(obj, "__dict__") else None
    if store is not None:
        return {k: v for k, v in dict(store).items() if v is not None}
    return {k: v for k, v in vars(obj).items() if not k.startswith("_") and v is not None}


def _np(value: Any, dtype: Any = float) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _scalar(value: Any) -> Any:
    arr = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    return arr.reshape(-1)[0].item() if arr.size == 1 else None


def _atoms(numbers: np.ndarray, pos: Any, cell: Any, pbc: Any) -> Any:
    from ase import Atoms

    return Atoms(numbers=numbers, positions=_np(pos).reshape(-1, 3), cell=_np(cell).reshape(3, 3), pbc=pbc)


def _pbc(fields: dict) -> Any:
    return _np(fields["pbc"], bool).reshape(-1)[:3].tolist() if "pbc" in fields else True


def record_to_pair(fields: dict, default_id: str, split: str | None, source: str) -> Item:
    """A :class:`RawPair` from the fields of one legacy record, or a :class:`Skipped`."""
    from ase.constraints import FixAtoms

    if "pos_u" in fields:
        numbers = np.rint(_np(fields["x"])).astype(int).reshape(-1)
        item_id = str(fields.get("cif_id", default_id))
        u = _atoms(numbers, fields["pos_u"], fields["cell_u"], _pbc(fields))
        r = _atoms(numbers, fields["pos_r"], fields["cell_r"], _pbc(fields)) if "pos_r" in fields else None
        energy = _scalar(fields["y"]) if "y" in fields else None
        return RawPair(item_id, u, r, energy=energy, split=split, source=source)
    if "pos_relaxed" in fields:
        numbers = np.rint(_np(fields["atomic_numbers"])).astype(int).reshape(-1)
        sid = _scalar(fields["sid"]) if "sid" in fields else None
        item_id = str(sid) if sid is not None else default_id
        u = _atoms(numbers, fields["pos"], fields["cell"], _pbc(fields))
        r = _atoms(numbers, fields["pos_relaxed"], fields["cell"], _pbc(fields))
        for atoms in (u, r):
            if "tags" in fields:
                atoms.set_tags(_np(fields["tags"], int).reshape(-1))
            if "fixed" in fields:
                atoms.set_constraint(FixAtoms(mask=_np(fields["fixed"], bool).reshape(-1)))
        return RawPair(item_id, u, r, split=split, source=source)
    return Skipped(default_id, f"{source}: record has neither pos_u/pos_r nor pos/pos_relaxed fields "
                   f"(fields: {sorted(fields)})", "unreadable", source)


@IMPORTERS.register("legacy_lmdb")
class LegacyLmdbImporter(Importer):
    """Pickled-``Data`` LMDBs of the E3Relax/DeepRelax authors or OC22 (needs ``trust_pickle``)."""

    needs_pickle = True

    def __init__(self, src: str | Path, *, trust_pickle: bool = False) -> None:
        super().__init__(src, trust_pickle=trust_pickle)
        self._files = self._find_files()
        if not self._files:
            raise FileNotFoundError(f"legacy_lmdb: no .lmdb files in '{self.src}'")

    def _find_files(self) -> list[tuple[Path, str | None]]:
        if self.src.is_file():
            return [(self.src, _split_of(self.src.parent.name))]
        direct = sorted(self.src.glob("*.lmdb"))
        if direct:
            return [(p, _split_of(self.src.name)) for p in direct]
        out = []
        for sub in sorted(p for p in self.src.iterdir() if p.is_dir()):
            out += [(p, _split_of(sub.name)) for p in sorted(sub.glob("*.lmdb"))]
        return out

    def __iter__(self) -> Iterator[Item]:
        import lmdb

        for path, split in self._files:
            try:
                env = lmdb.open(str(path), subdir=path.is_dir(), readonly=True, lock=False, readahead=False)
            except lmdb.Error as exc:
                yield Skipped(path.name, f"{path}: cannot open LMDB ({exc})", "unreadable", str(path))
                continue
            try:
                with env.begin() as txn:
                    keys = sorted((k for k in txn.cursor().iternext(values=False) if k not in _SKIP_KEYS),
                                  key=lambda k: (0, int(k)) if k.isdigit() else (1, k))
                    for key in keys:
                        default_id = f"{path.stem}:{key.decode(errors='replace')}"
                        try:
                            fields = record_fields(pickle.loads(txn.get(key)))
                            yield record_to_pair(fields, default_id, split, str(path))
                        except Exception as exc:
                            yield Skipped(default_id, f"{path} key {key!r}: cannot read record ({type(exc).__name__}: {exc})",
                                          "unreadable", str(path))
            finally:
                env.close()


def _split_of(folder: str) -> str | None:
    m = _SPLIT_DIR.match(folder)
    if not m:
        return None
    name = m.group(1).lower()
    return "val" if name.startswith("val") else "test" if name.startswith("test") else "train"
