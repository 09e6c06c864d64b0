"""Reading the safe LMDB format: ``LmdbDataset``, a PyTorch dataset of PyG ``Data``.

``LmdbDataset(path)`` takes one shard file or a folder of shards (``out/train.lmdb``). Metadata
is read once at construction (then the environments are closed); each process that reads
(the main process or a DataLoader worker) opens its own read-only environments on first access,
so forked workers never share an LMDB handle. Records are decoded without unpickling and checked
for meaning (:func:`e3relax.records.record_problem`: counts, finite positions and cells, edge
indices) before use; a bad record raises :class:`FormatError` naming its shard, key and id, or,
for a dataset built with ``skip_bad=True``, is left out (:attr:`LmdbDataset.skipped`).
"""
from __future__ import annotations

import bisect
import logging
import os
from pathlib import Path
from typing import Any, Callable

import lmdb
import numpy as np
import torch

from e3relax.keys import ID
from e3relax.records import record_problem
from e3relax.datasets.lmdb_format import (
    SHARD_GLOB,
    FormatError,
    METADATA_KEY,
    decode_metadata,
    decode_record,
    record_key,
)
from e3relax.errors import MissingPathError

log = logging.getLogger(__name__)


_ENVS: dict[str, lmdb.Environment] = {}
_ENVS_PID: list[int] = [os.getpid()]


def _open(path: Path) -> lmdb.Environment:
    """The read-only environment of a shard, shared within this process (LMDB allows one per file).

    A forked child (DataLoader worker) never reuses its parent's handles: it opens its own.
    """
    if _ENVS_PID[0] != os.getpid():
        for env in _ENVS.values():  # handles inherited through fork: never used by the child
            env.close()  # (read-only, lock=False: closing only unmaps this process's copy)
        _ENVS.clear()
        _ENVS_PID[0] = os.getpid()
    key = str(Path(path).resolve())
    env = _ENVS.get(key)
    if env is None:
        if Path(key).is_file() and Path(key).stat().st_size == 0:
            raise FormatError(f"{path}: empty file (0 bytes), not an LMDB database; convert the data again")
        try:
            env = lmdb.open(key, subdir=False, readonly=True, lock=False, readahead=False, meminit=False,
                            max_readers=256)
        except lmdb.Error as exc:
            reason = str(exc).split(": ", 1)[-1] if str(exc).startswith(key) else str(exc)
            raise FormatError(f"{path}: not a readable LMDB database ({reason})") from exc
        _ENVS[key] = env
    return env


def release(path: str | Path) -> None:
    """Close this process's read handle of a shard (before writing to it, or to free it)."""
    if _ENVS_PID[0] == os.getpid():
        env = _ENVS.pop(str(Path(path).resolve()), None)
        if env is not None:
            env.close()


def shard_paths(path: str | Path) -> list[Path]:
    """The shard files of a database: the file itself, or the ``shard_*.lmdb`` files of a folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        shards = sorted(p for p in path.glob(SHARD_GLOB) if p.is_file())
        if not shards:
            others = sorted(p.name for p in path.glob("*.lmdb"))
            hint = f" (it holds {', '.join(others[:4])}: give one of those)" if others else ""
            raise FormatError(f"{path}: folder has no {SHARD_GLOB} files: not an LMDB database{hint}")
        return shards
    raise MissingPathError(f"LMDB database '{path}' does not exist")


def read_metadata(shard: str | Path) -> dict[str, Any]:
    """The metadata record of one shard (``FormatError`` if missing: incomplete database)."""
    with _open(Path(shard)).begin() as txn:
        return decode_metadata(txn.get(METADATA_KEY), str(shard))


def _check_shards(path: Path, shards: list[Path], metas: list[dict]) -> None:
    if len(shards) == 1 and path.is_file():
        return
    listed = metas[0].get("shards")
    found = [p.name for p in shards]
    if listed is not None and sorted(listed) != found:
        missing = sorted(set(listed) - set(found))
        raise FormatError(f"{path}: shards {missing or sorted(set(found) - set(listed))} missing or unexpected; "
                          "the database is incomplete - convert again")
    splits = {m.get("split") for m in metas}
    if len(splits) > 1:
        raise FormatError(f"{path}: shards of different splits {sorted(map(str, splits))} in one folder")


def _sum_elements(metas: list[dict]) -> dict[int, list[int]] | None:
    if any("elements" not in m for m in metas):
        return None
    out: dict[int, list[int]] = {}
    for m in metas:
        for z, (atoms, structures) in m["elements"].items():
            tot = out.setdefault(int(z), [0, 0])
            tot[0] += int(atoms)
            tot[1] += int(structures)
    return dict(sorted(out.items()))


class LmdbDataset(torch.utils.data.Dataset):
    """Structures of one split as PyG ``Data`` objects.

    Args:
        path: a shard file or a folder of shards.
        transform: optional callable applied to each ``Data``.
        dtype: floating dtype of positions and cells.

    Attributes:
        natoms: [len] int64 numpy array, atoms per record (for batching by size).
        ids: list of structure ids.
        metadata: merged metadata (format version, graph, source, counts, natoms).
        elements: ``{Z: [atoms, structures]}`` of the split (None for databases converted before
            it was recorded).
    """

    def __init__(self, path: str | Path, transform: Callable | None = None, dtype: torch.dtype = torch.float32,
                 skip_bad: bool = False) -> None:
        self.path = Path(path)
        self.transform = transform
        self.dtype = dtype
        self.shards = shard_paths(self.path)
        metas = [read_metadata(p) for p in self.shards]
        _check_shards(self.path, self.shards, metas)
        self._counts = [m["counts"]["records"] for m in metas]
        self._offsets = np.concatenate([[0], np.cumsum(self._counts)]).astype(np.int64)
        self.natoms = np.asarray([n for m in metas for n in m["natoms"]], dtype=np.int64)
        self.ids = [i for m in metas for i in m["ids"]]
        self._raw_natoms, self._raw_ids = self.natoms, list(self.ids)
        first = metas[0]
        self.metadata = {k: v for k, v in first.items() if k not in ("natoms", "ids", "shard", "counts")}
        self.metadata["counts"] = {"records": int(self._offsets[-1]), "atoms": int(self.natoms.sum()),
                                   "shards": len(self.shards)}
        self.metadata["natoms"] = self.natoms.tolist()
        #: ``{Z: [atoms, structures]}`` over the split, from the shards' metadata (None: not recorded)
        self.elements = _sum_elements(metas)
        graph = first.get("graph") or {}
        self._cutoff = float(graph["cutoff"]) if isinstance(graph.get("cutoff"), (int, float)) else None
        self._envs: list[lmdb.Environment] | None = None
        self._pid: int | None = None
        self._index = np.arange(int(self._offsets[-1]), dtype=np.int64)
        #: ``(where, reason)`` of every record left out by ``skip_bad=True``
        self.skipped: list[tuple[str, str]] = []
        if skip_bad:
            self._skip_bad()

    def _skip_bad(self) -> None:
        """Check every record once; keep the good ones (their order unchanged)."""
        good = []
        for i in range(int(self._offsets[-1])):
            try:
                self._read(i)
            except FormatError as exc:
                where, _, reason = str(exc).partition(": ")
                self.skipped.append((where, reason))
                log.warning("skipping %s", exc)
                continue
            good.append(i)
        self._index = np.asarray(good, dtype=np.int64)
        self.natoms = self.natoms[self._index]
        self.ids = [self.ids[i] for i in self._index]
        if self.skipped:
            log.warning("%s: skipped %d of %d records that failed validation", self.path, len(self.skipped),
                        int(self._offsets[-1]))

    def __len__(self) -> int:
        return len(self._index)

    def _environments(self) -> list[lmdb.Environment]:
        if self._envs is None or self._pid != os.getpid():  # first use in this process (e.g. a forked worker)
            self._envs = None
            self._envs = [_open(p) for p in self.shards]
            self._pid = os.getpid()
        return self._envs

    def locate(self, index: int) -> tuple[int, int]:
        """``(shard number, key within shard)`` of record ``index``."""
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"{self.path}: index {index} out of range for {n} records")
        return self._locate_raw(int(self._index[index]))

    def _locate_raw(self, raw: int) -> tuple[int, int]:
        shard = bisect.bisect_right(self._offsets, raw) - 1
        return shard, int(raw - self._offsets[shard])

    def _read(self, raw: int) -> dict[str, Any]:
        """Read, decode and check the record at position ``raw`` of the shards (skipped ones included)."""
        shard, key = self._locate_raw(raw)
        with self._environments()[shard].begin() as txn:
            data = txn.get(record_key(key))
        where = f"{self.shards[shard]} record {key}"
        if data is None:
            raise FormatError(f"{where}: missing (the metadata lists {self._counts[shard]} records)")
        record = decode_record(data, where)
        sid = self._raw_ids[raw] if raw < len(self._raw_ids) else None
        problem = record_problem(record, natoms=int(self._raw_natoms[raw]), cutoff=self._cutoff)
        if problem is None and sid is not None and str(record.get(ID, sid)) != sid:
            problem = f"id '{record.get(ID)}', but the database metadata lists '{sid}' for this record"
        if problem is not None:
            raise FormatError(f"{where} (id '{sid}'): {problem}")
        return record

    def record(self, index: int) -> dict[str, Any]:
        """The raw record (dict of numpy arrays) at ``index``, checked for meaning.

        Raises:
            FormatError: naming the shard, the record key and id, and what is wrong with it.
        """
        n = len(self)
        index = int(index) + (n if int(index) < 0 else 0)
        if not 0 <= index < n:
            raise IndexError(f"{self.path}: index {index} out of range for {n} records")
        return self._read(int(self._index[index]))

    def __getitem__(self, index: int):
        from e3relax.records import record_to_data

        data = record_to_data(self.record(index), dtype=self.dtype)
        return self.transform(data) if self.transform is not None else data

    def close(self) -> None:
        """Close this process's handles of the shards (other datasets on the same files reopen them)."""
        if self._envs is not None and self._pid == os.getpid():
            for p in self.shards:
                release(p)
        self._envs = None

    def __getstate__(self) -> dict[str, Any]:  # never pickle an open environment into a worker
        state = dict(self.__dict__)
        state["_envs"] = None
        state["_pid"] = None
        return state

    def __repr__(self) -> str:
        return f"LmdbDataset('{self.path}', {len(self)} records, {len(self.shards)} shard(s))"
