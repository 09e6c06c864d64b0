"""The safe LMDB format: record codec and metadata.

A dataset split is one LMDB file (``subdir=False``) or a folder of such files (shards). Each
shard holds:

- records under the keys ``b"0"``, ``b"1"``, ... (decimal index within the shard); a record is
  a JSON header (field name, dtype, shape, offset) followed by the raw bytes of plain numeric
  arrays (:func:`encode_record`); decoding uses ``json`` and ``np.frombuffer`` with a dtype
  allow-list, so loading a record can never run code (no pickle, no ``eval``);
- one metadata record under :data:`METADATA_KEY`: UTF-8 JSON with the format version, the graph
  parameters, the source, the counts and the atom count of every record (for batching by size).

A shard without its metadata record is incomplete (the writer adds it last, once everything
else is in place) and the reader refuses it.
"""
from __future__ import annotations

import json
import struct
import zlib
from typing import Any, Mapping

import numpy as np

from e3relax.errors import InputError

FORMAT_NAME = "e3relax-lmdb"
FORMAT_VERSION = 1
METADATA_KEY = b"__metadata__"
#: name of the shard files inside a split folder: ``shard_00000.lmdb`` ...
SHARD_PATTERN = "shard_{:05d}.lmdb"
SHARD_GLOB = "shard_*.lmdb"


class FormatError(InputError):
    """A database or record that does not follow the format (names the file and the field)."""


def record_key(index: int) -> bytes:
    """LMDB key of the record at ``index`` within its shard."""
    return str(int(index)).encode("ascii")


#: first bytes of every record
RECORD_MAGIC = b"E3RX"
_ALIGN = 16
_ALLOWED_KINDS = set("biuf")  # bool, signed/unsigned int, float: nothing that needs unpickling


def encode_record(record: Mapping[str, Any]) -> bytes:
    """Serialise a record (field name -> array, str, number or None) as plain bytes.

    Layout: ``b"E3RX"``, a little-endian uint32 header length, a UTF-8 JSON header
    ``{"fields": [{"name", "dtype", "shape", "offset"} | {"name", "str"}], "size", "crc32"}``, then
    the raw C-ordered array buffers (16-byte aligned). ``size`` and ``crc32`` (zlib) describe those
    buffers, so a truncated or altered record is recognised as such (records written before they
    existed are read without the check). ``None`` values are left out; strings are kept in the
    header. Only bool, integer and floating arrays are stored.

    Raises:
        FormatError: naming the field that is not a plain numeric array or a string.
    """
    fields, chunks, offset = [], [], 0
    for name, value in record.items():
        if value is None:
            continue
        if isinstance(value, (str, np.str_)):
            fields.append({"name": name, "str": str(value)})
            continue
        if hasattr(value, "detach"):  # torch tensor
            value = value.detach().cpu().numpy()
        arr = np.asarray(value)
        if arr.dtype.kind not in _ALLOWED_KINDS:
            raise FormatError(f"record field '{name}' has dtype {arr.dtype} ({type(value).__name__}); only bool, "
                              "integer and float arrays or strings are stored")
        arr = arr.astype(arr.dtype.newbyteorder("<"), order="C", copy=False)
        pad = (-offset) % _ALIGN
        chunks.append(b"\0" * pad)
        offset += pad
        fields.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset})
        chunks.append(arr.tobytes())
        offset += arr.nbytes
    body = b"".join(chunks)
    header = json.dumps({"fields": fields, "size": len(body), "crc32": zlib.crc32(body)},
                        separators=(",", ":")).encode("utf-8")
    header += b" " * ((-(len(header) + 8)) % _ALIGN)
    return RECORD_MAGIC + struct.pack("<I", len(header)) + header + body


def _check_envelope(data: bytes, where: str) -> tuple[dict, memoryview]:
    """The JSON header and the body of a record, after checking sizes and the checksum."""
    if not data:
        raise FormatError(f"{where}: empty record (0 bytes)")
    if len(data) < 8:
        if RECORD_MAGIC.startswith(data[:4]):
            raise FormatError(f"{where}: truncated record ({len(data)} bytes; the fixed header alone is 8)")
        raise FormatError(f"{where}: not an e3relax record ({len(data)} bytes, starting {data[:4]!r})")
    if data[:4] != RECORD_MAGIC:
        raise FormatError(f"{where}: not an e3relax record (starts with {data[:4]!r}, not {RECORD_MAGIC!r})")
    (hlen,) = struct.unpack("<I", data[4:8])
    if 8 + hlen > len(data):
        raise FormatError(f"{where}: truncated record ({len(data)} bytes; its header alone needs {8 + hlen})")
    try:
        header = json.loads(data[8:8 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{where}: corrupt record header ({exc})") from exc
    if not isinstance(header, dict) or not isinstance(header.get("fields"), list):
        raise FormatError(f"{where}: corrupt record header (no field list)")
    body = memoryview(data)[8 + hlen:]
    size = header.get("size")
    if size is not None and len(body) != size:
        what = "truncated" if len(body) < size else "corrupt"
        raise FormatError(f"{where}: {what} record (array data of {len(body)} bytes, its header says {size})")
    crc = header.get("crc32")
    if crc is not None and zlib.crc32(body) != crc:
        raise FormatError(f"{where}: corrupt record (checksum of the array data does not match: the bytes "
                          "were altered after writing)")
    return header, body


def decode_record(data: bytes, where: str = "record") -> dict[str, Any]:
    """Read bytes from :func:`encode_record` back into a dict of arrays (strings as ``str``).

    Nothing is unpickled or evaluated: the header is JSON and every array is built with
    ``np.frombuffer`` from a numeric dtype checked against an allow-list.

    Raises:
        FormatError: when the bytes are not such a record (``where`` names the record).
    """
    header, body = _check_envelope(bytes(data), where)
    try:
        out: dict[str, Any] = {}
        for f in header["fields"]:
            if "str" in f:
                out[f["name"]] = str(f["str"])
                continue
            dtype = np.dtype(f["dtype"])
            if dtype.kind not in _ALLOWED_KINDS:
                raise FormatError(f"{where}: field '{f['name']}' has disallowed dtype {dtype}")
            count = int(np.prod(f["shape"], dtype=np.int64))
            end = int(f["offset"]) + count * dtype.itemsize
            if end > len(body):
                raise FormatError(f"{where}: truncated record (field '{f['name']}' needs {end} bytes of array "
                                  f"data, the record has {len(body)})")
            arr = np.frombuffer(body, dtype=dtype, count=count, offset=int(f["offset"]))
            out[f["name"]] = arr.reshape(tuple(f["shape"])).astype(dtype.newbyteorder("="), copy=True)
    except FormatError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{where}: corrupt record ({type(exc).__name__}: {exc})") from exc
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
