"""Safe LMDB format: codec, metadata, shards, reader (with DataLoader workers) and splits."""
from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from data_fixtures import graph_spec, random_atoms, relax_like
from e3relax import keys
from e3relax.datasets import writer
from e3relax.datasets.lmdb_format import (
    FORMAT_VERSION,
    METADATA_KEY,
    FormatError,
    decode_metadata,
    decode_record,
    encode_metadata,
    encode_record,
    make_metadata,
)
from e3relax.datasets.reader import LmdbDataset, read_metadata
from e3relax.datasets.splits import assign_split, parse_ratio
from e3relax.datasets.worker import build_graph
from e3relax.records import collate, make_record, record_to_data


def _records(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    graph = build_graph(graph_spec())
    out = []
    for k in range(n):
        a = random_atoms(rng, "NaCl" if k % 2 else "MgO", n=2 + k % 4)
        rec, _ = make_record(a, relax_like(a, rng), f"s{k}", graph, energy=-1.0 - k)
        out.append(rec)
    return out


def _write_db(folder, records, shard_sizes, split="train"):
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"shard_{k:05d}.lmdb" for k in range(len(shard_sizes))]
    start = 0
    for k, size in enumerate(shard_sizes):
        part = records[start:start + size]
        start += size
        meta = make_metadata(natoms=[len(r[keys.Z]) for r in part], ids=[r[keys.ID] for r in part], graph={"name": "g"},
                             source={"layout": "test"}, split=split, shard=k, num_shards=len(shard_sizes),
                             split_records=len(records), extra={"shards": names})
        writer.write_shard(folder / names[k], [encode_record(r) for r in part], meta)
    return folder


def test_record_round_trip_exact():
    rec = _records(1)[0]
    back = decode_record(encode_record(rec))
    assert set(back) == set(rec)
    assert back[keys.ID] == "s0" and isinstance(back[keys.ID], str)
    for k, v in rec.items():
        if k != keys.ID:
            np.testing.assert_array_equal(back[k], np.asarray(v))
            assert back[k].dtype == np.asarray(v).dtype


def test_codec_refuses_objects_and_pickles():
    with pytest.raises(FormatError, match="record field 'bad' has dtype object"):
        encode_record({"bad": np.array([{"a": 1}], dtype=object)})
    buf = io.BytesIO()
    np.savez(buf, evil=np.array([object()], dtype=object))  # an archive that would need unpickling
    with pytest.raises(FormatError, match="rec 7: not an e3relax record"):
        decode_record(buf.getvalue(), "rec 7")
    with pytest.raises(FormatError, match="rec 8: not an e3relax record"):
        decode_record(pickle.dumps({"pos_u": 1}), "rec 8")
    good = encode_record({"x": np.arange(3.0)})
    forged = good.replace(b'"<f8"', b'"|O8"')  # a header asking for objects is refused, not obeyed
    with pytest.raises(FormatError, match="rec 9: field 'x' has disallowed dtype object"):
        decode_record(forged, "rec 9")
    with pytest.raises(FormatError, match="rec 10: truncated record"):
        decode_record(good[:-8], "rec 10")
    assert encode_record({"a": None, "b": 1.5}) == encode_record({"b": 1.5})
    back = decode_record(encode_record({"m": np.arange(6, dtype=">i4").reshape(2, 3), "flag": np.array([True]),
                                        "e": np.float32(2.5), "s": "x"}))
    np.testing.assert_array_equal(back["m"], np.arange(6).reshape(2, 3))
    assert back["flag"].dtype == bool and back["e"].shape == () and back["e"] == 2.5 and back["s"] == "x"
    back["m"][0, 0] = 7  # decoded arrays are writable copies


def test_metadata_checks():
    meta = make_metadata(natoms=[2, 3], ids=["a", "b"], graph={"cutoff": 5.0}, source={}, split="val",
                         shard=0, num_shards=1, split_records=2)
    assert decode_metadata(encode_metadata(meta), "x") == meta
    with pytest.raises(FormatError, match="x: no metadata record; the database is incomplete"):
        decode_metadata(None, "x")
    newer = dict(meta, format_version=FORMAT_VERSION + 1)
    with pytest.raises(FormatError, match="newer than this reader"):
        decode_metadata(encode_metadata(newer), "x")
    with pytest.raises(FormatError, match="2 atom counts for 1 ids"):
        make_metadata(natoms=[2, 3], ids=["a"], graph=None, source={}, split="t", shard=0, num_shards=1, split_records=1)


def test_reader_single_file_and_folder(tmp_path):
    recs = _records(7)
    folder = _write_db(tmp_path / "train.lmdb", recs, [3, 4])
    ds = LmdbDataset(folder, dtype=torch.float64)
    assert len(ds) == 7 and len(ds.shards) == 2
    np.testing.assert_array_equal(ds.natoms, [len(r[keys.Z]) for r in recs])
    assert ds.metadata["counts"]["records"] == 7 and ds.metadata["graph"] == {"name": "g"}
    for k in (0, 3, 6, -1):
        d = ds[k]
        r = recs[k]
        assert d[keys.ID] == r[keys.ID] and d[keys.POS_U].dtype == torch.float64
        torch.testing.assert_close(d[keys.POS_R], torch.as_tensor(r[keys.POS_R]))
        torch.testing.assert_close(d[keys.CELL_U][0], torch.as_tensor(r[keys.CELL_U]))
        assert torch.equal(d[keys.EDGE_INDEX], torch.as_tensor(r[keys.EDGE_INDEX]))
    with pytest.raises(IndexError, match="index 7 out of range for 7 records"):
        ds[7]
    one = LmdbDataset(folder / "shard_00001.lmdb")  # a shard file is a database on its own
    assert len(one) == 4 and one[0][keys.ID] == "s3"


def test_reader_refuses_incomplete(tmp_path):
    recs = _records(4)
    writer.write_shard(tmp_path / "a.lmdb", [encode_record(r) for r in recs])  # metadata never added
    with pytest.raises(FormatError, match="no metadata record; the database is incomplete"):
        LmdbDataset(tmp_path / "a.lmdb")
    folder = _write_db(tmp_path / "f.lmdb", recs, [2, 2])
    (folder / "shard_00001.lmdb").unlink()
    with pytest.raises(FormatError, match=r"shards \['shard_00001.lmdb'\] missing"):
        LmdbDataset(folder)
    assert read_metadata(folder / "shard_00000.lmdb")["counts"]["split_records"] == 4
    writer.add_metadata(tmp_path / "a.lmdb", {"format": "other"})
    with pytest.raises(FormatError, match="format 'other' is not 'e3relax-lmdb'"):
        LmdbDataset(tmp_path / "a.lmdb")


def _batches(ds, num_workers):
    loader = torch.utils.data.DataLoader(ds, batch_size=3, shuffle=False, num_workers=num_workers, collate_fn=collate)
    return [(list(b[keys.ID]), b[keys.POS_U].clone(), b[keys.EDGE_INDEX].clone()) for b in loader]


def test_dataloader_workers_match(tmp_path):
    recs = _records(8)
    ds = LmdbDataset(_write_db(tmp_path / "t.lmdb", recs, [5, 3]))
    ds[0]  # open environments in the parent first: workers must reopen their own
    serial, parallel = _batches(ds, 0), _batches(ds, 2)
    assert [b[0] for b in serial] == [[f"s{k}" for k in range(i, min(i + 3, 8))] for i in range(0, 8, 3)]
    for (ia, pa, ea), (ib, pb, eb) in zip(serial, parallel):
        assert ia == ib and torch.equal(pa, pb) and torch.equal(ea, eb)
    assert pickle.loads(pickle.dumps(ds))._envs is None


def test_record_to_data_from_decoded_matches_direct():
    rec = _records(1, seed=3)[0]
    a, b = record_to_data(rec), record_to_data(decode_record(encode_record(rec)))
    for k in a.keys():
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]) or torch.allclose(a[k], b[k], equal_nan=True), k


def test_splits_ratio_and_determinism():
    assert parse_ratio("8:1:1") == pytest.approx({"train": 0.8, "val": 0.1, "test": 0.1})
    assert parse_ratio("9:1") == pytest.approx({"train": 0.9, "val": 0.1})
    with pytest.raises(ValueError, match="give 1 to 3 parts"):
        parse_ratio("1:1:1:1")
    with pytest.raises(ValueError, match="parts must be numbers"):
        parse_ratio("a:b")
    ratio = parse_ratio("8:1:1")
    ids = [f"id{k}" for k in range(5000)]
    first = {i: assign_split(i, ratio, seed=1) for i in ids}
    second = {i: assign_split(i, ratio, seed=1) for i in reversed(ids)}
    assert first == second
    frac = {s: sum(v == s for v in first.values()) / len(ids) for s in ratio}
    assert frac == pytest.approx(ratio, abs=0.02)
    other = [assign_split(i, ratio, seed=2) for i in ids]
    assert sum(a != b for a, b in zip(first.values(), other)) > 500  # the seed matters
    assert {assign_split(i, parse_ratio("1:0:1"), 0) for i in ids} == {"train", "test"}


def test_metadata_key_not_a_record(tmp_path):
    folder = _write_db(tmp_path / "m.lmdb", _records(2), [2])
    assert writer.count_records(folder / "shard_00000.lmdb") == 2
    import lmdb

    env = lmdb.open(str(folder / "shard_00000.lmdb"), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        assert txn.get(METADATA_KEY) is not None and txn.get(b"2") is None
    env.close()
