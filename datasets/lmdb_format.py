"""The safe LMDB format: record codec and metadata.

A dataset split is one LMDB file (``subdir=False``) or a folder of such files (shards). Each
shard holds:

- records under the keys ``b"0"``, ``b"1"``, ... (decimal index within the shard); a record is
  the bytes of an uncompressed ``.npz`` archive of plain numpy arrays (``np.savez``), read back
  with ``np.load(allow_pickle=False)``, so loading a record can never run code;
- one metadata record under :data:`METADATA_KEY`: UTF-8 JSON with the format version, the graph
  parameters, the source, the counts and the atom count of every record (for batching by size).

A shard without its metadata record is incomplete (the writer adds it last, once everything
else is in place) and the reader refuses it.
"""
from __future__ import annotations

import io
import json
from typing import Any, Mapping

import numpy as np

FORMAT_NAME = "e3relax-lmdb"
FORMAT_VERSION = 1
METADATA_KEY = b"__metadata__"
#: name of the shard files inside a split folder: ``shard_00000.lmdb`` ...
SHARD_PATTERN = "shard_{:05d}.lmdb"
SHARD_GLOB = "shard_*.lmdb"


class FormatError(ValueError):
    """A database or record that does not follow the format (names the file and the field)."""


def record_key(index: int) -> bytes:
    """LMDB key of the record at ``index`` within its shard."""
    return str(int(index)).encode("ascii")


def encode_record(record: Mapping[str, Any]) -> bytes:
    """Serialise a record (field name -> array, str, number or None) as npz bytes.

    ``None`` values are left out; strings become 0-d unicode arrays; numbers 0-d arrays.
    Object arrays are refused: they would need pickling.

    Raises:
        FormatError: naming the field that is not a plain array.
    """
    arrays: dict[str, np.ndarray] = {}
    for name, value in record.items():
        if value is None:
            continue
        if hasattr(value, "detach"):  # torch tensor
            value = value.detach().cpu().numpy()
        arr = np.asarray(value)
        if arr.dtype == object:
            raise FormatError(f"record field '{name}' is an object array ({type(value).__name__}); only plain arrays are stored")
        arrays[name] = arr
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def decode_record(data: bytes, where: str = "record") -> dict[str, Any]:
    """Read npz bytes back into a dict of arrays without unpickling (0-d strings become ``str``).

    Raises:
        FormatError: when the bytes are not a pickle-free npz archive (``where`` names the record).
    """
    try:
        with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as npz:
            out: dict[str, Any] = {}
            for name in npz.files:
                arr = npz[name]
                out[name] = str(arr) if arr.dtype.kind == "U" and arr.ndim == 0 else arr
    except ValueError as exc:  # includes "Object arrays cannot be loaded when allow_pickle=False"
        raise FormatError(f"{where}: not a plain-array npz record ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise FormatError(f"{where}: unreadable record ({exc})") from exc
    return out


def make_metadata(
    *,
    natoms: list[int],
    ids: list[str],
    graph: Mapping[str, Any] | None,
    source: Mapping[str, Any],
    split: str,
    shard: int,
    num_shards: int,
    split_records: int,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Metadata of one shard (JSON-serialisable).

    Args:
        natoms: atom count of every record of the shard, in key order.
        ids: structure id of every record, in key order.
        graph: parameters of the graph builder that made the edges.
        source: where the data came from (layout, path, options).
        split: ``train``/``val``/``test``/... the split this shard belongs to.
        shard: index of this shard in its split folder; ``num_shards`` shards in all.
        split_records: number of records over all shards of the split.
        extra: anything else worth keeping (e.g. whether the raw frame was kept).
    """
    if len(natoms) != len(ids):
        raise FormatError(f"metadata: {len(natoms)} atom counts for {len(ids)} ids")
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "graph": dict(graph or {}),
        "source": dict(source),
        "split": split,
        "shard": int(shard),
        "num_shards": int(num_shards),
        "counts": {"records": len(ids), "split_records": int(split_records), "atoms": int(sum(natoms))},
        "natoms": [int(n) for n in natoms],
        "ids": [str(i) for i in ids],
    }
    if extra:
        meta.update(dict(extra))
    return meta


def encode_metadata(meta: Mapping[str, Any]) -> bytes:
    """JSON bytes of a metadata dict."""
    return json.dumps(meta, sort_keys=True).encode("utf-8")


def decode_metadata(data: bytes | None, where: str) -> dict[str, Any]:
    """Parse and check a metadata record.

    Raises:
        FormatError: when it is absent (incomplete database), not JSON, of another format or of
            a newer version than this reader understands.
    """
    if data is None:
        raise FormatError(
            f"{where}: no metadata record; the database is incomplete (an interrupted conversion?) "
            "- rerun the conversion"
        )
    try:
        meta = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{where}: metadata record is not JSON ({exc})") from exc
    if meta.get("format") != FORMAT_NAME:
        raise FormatError(f"{where}: format '{meta.get('format')}' is not '{FORMAT_NAME}'")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FormatError(
            f"{where}: format version {version!r} is newer than this reader's ({FORMAT_VERSION}); upgrade e3relax"
        )
    if len(meta.get("natoms", [])) != meta.get("counts", {}).get("records"):
        raise FormatError(f"{where}: metadata lists {len(meta.get('natoms', []))} atom counts for "
                          f"{meta.get('counts', {}).get('records')} records")
    return meta
