"""Writing shards of the safe LMDB format, atomically.

Every file is written under a temporary name and renamed into place only once complete, so an
interrupted write never leaves a file that looks finished. A shard gets its metadata record last
(:func:`add_metadata`); the reader refuses a shard without one. The conversion driver
(:mod:`e3relax.datasets.convert`) builds on these pieces.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

import lmdb

from e3relax.datasets.lmdb_format import METADATA_KEY, encode_metadata, record_key

log = logging.getLogger(__name__)

_INITIAL_MAP_SIZE = 1 << 28  # 256 MiB, doubled on demand


def _open_writable(path: Path, map_size: int) -> lmdb.Environment:
    from e3relax.datasets.reader import release

    release(path)  # LMDB allows one handle per file and process
    return lmdb.open(
        str(path), subdir=False, map_size=map_size, lock=False, readahead=False, meminit=False,
        metasync=False, sync=False,
    )


def _put_all(path: Path, items: list[tuple[bytes, bytes]]) -> None:
    """Put ``(key, value)`` pairs in one transaction, growing the map until they fit."""
    size = max(_INITIAL_MAP_SIZE, 2 * sum(len(k) + len(v) for k, v in items))
    if path.exists():
        size = max(size, 2 * path.stat().st_size)
    while True:
        env = _open_writable(path, size)
        try:
            with env.begin(write=True) as txn:
                for key, value in items:
                    txn.put(key, value)
            env.sync(True)
            return
        except lmdb.MapFullError:
            size *= 2
            log.debug("%s: growing LMDB map to %d bytes", path, size)
        finally:
            env.close()


def write_shard(path: str | Path, records: Iterable[bytes], metadata: Mapping[str, Any] | None = None) -> Path:
    """Write encoded records (keys 0, 1, ...) to a new shard file, atomically.

    The file is written as ``<path>.tmp`` and renamed to ``path`` when complete. With
    ``metadata`` the shard is complete at once; without, :func:`add_metadata` completes it later.

    Returns:
        The path of the written shard.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    _remove(tmp)
    items = [(record_key(i), bytes(r)) for i, r in enumerate(records)]
    if metadata is not None:
        items.append((METADATA_KEY, encode_metadata(metadata)))
    _put_all(tmp, items)
    from e3relax.datasets.reader import release

    release(path)
    os.replace(tmp, path)
    return path


def add_metadata(path: str | Path, metadata: Mapping[str, Any]) -> None:
    """Write (or replace) the metadata record of an existing shard, which completes it."""
    _put_all(Path(path), [(METADATA_KEY, encode_metadata(metadata))])


def count_records(path: str | Path) -> int:
    """Number of record keys in a shard (the metadata record not counted)."""
    from e3relax.datasets.reader import _open, release

    try:
        with _open(Path(path)).begin() as txn:
            n = txn.stat()["entries"]
            return n - (1 if txn.get(METADATA_KEY) is not None else 0)
    finally:
        release(path)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, sort_keys=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    from e3relax.datasets.reader import release

    for f in ([path] if not path.is_dir() else list(path.rglob("*.lmdb"))):
        release(f)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    lock = path.with_name(path.name + "-lock")
    if lock.exists():
        lock.unlink()


def remove_path(path: str | Path) -> None:
    """Remove a file or folder (and an LMDB ``-lock`` file beside it) if present."""
    _remove(Path(path))
