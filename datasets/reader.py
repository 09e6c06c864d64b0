"""Reading the safe LMDB format: ``LmdbDataset``, a PyTorch dataset of PyG ``Data``.

``LmdbDataset(path)`` takes one shard file or a folder of shards (``out/train.lmdb``). Metadata
is read once at construction (then the environments are closed); each process that reads
(the main process or a DataLoader worker) opens its own read-only environments on first access,
so forked workers never share an LMDB handle. Records are decoded without unpickling.
"""
from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import Any, Callable

import lmdb
import numpy as np
import torch

from e3relax.datasets.lmdb_format import (
    SHARD_GLOB,
    FormatError,
    METADATA_KEY,
    decode_metadata,
    decode_record,
    record_key,
)


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
        env = lmdb.open(key, subdir=False, readonly=True, lock=False, readahead=False, meminit=False,
                        max_readers=256)
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
            raise FormatError(f"{path}: folder has no {SHARD_GLOB} files")
        return shards
    raise FileNotFoundError(f"LMDB database '{path}' does not exist")


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
    """

    def __init__(self, path: str | Path, transform: Callable | None = None, dtype: torch.dtype = torch.float32) -> None:
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
        first = metas[0]
        self.metadata = {k: v for k, v in first.items() if k not in ("natoms", "ids", "shard", "counts")}
        self.metadata["counts"] = {"records": int(self._offsets[-1]), "atoms": int(self.natoms.sum()),
                                   "shards": len(self.shards)}
        self.metadata["natoms"] = self.natoms.tolist()
        self._envs: list[lmdb.Environment] | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return int(self._offsets[-1])

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
        shard = bisect.bisect_right(self._offsets, index) - 1
        return shard, int(index - self._offsets[shard])

    def record(self, index: int) -> dict[str, Any]:
        """The raw record (dict of numpy arrays) at ``index``."""
        shard, key = self.locate(int(index))
        with self._environments()[shard].begin() as txn:
            data = txn.get(record_key(key))
        where = f"{self.shards[shard]} record {key}"
        if data is None:
            raise FormatError(f"{where}: missing")
        return decode_record(data, where)

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
