"""Records are checked for meaning when read: a tampered, truncated or non-finite record is refused
with a message naming its shard, record and id; training and evaluation stop on it, or with
``--skip-bad-records`` leave it out and count it."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import test_engine_toy as toy
from data_fixtures import random_atoms, relax_like
from e3relax import keys as K
from e3relax.cli.main import main
from e3relax.datasets.lmdb_format import FormatError, encode_record, make_metadata
from e3relax.datasets.reader import LmdbDataset
from e3relax.datasets.writer import write_shard
from e3relax.records import make_record
from e3relax.registry import GRAPHS

GRAPH = {"name": "periodic_multi_edge", "cutoff": 4.0, "max_neighbors": 12}


def graph_records(n: int = 3) -> list[dict]:
    rng = np.random.default_rng(0)
    builder = GRAPHS.build(GRAPH)
    out = []
    for i in range(n):
        a = random_atoms(rng, "NaCl", n=4)
        out.append(make_record(a, relax_like(a, rng), f"s{i}", builder)[0])
    return out


def write_db(path, records, natoms=None, graph=None, raw=None):
    """One shard of ``records``; ``raw`` replaces the encoded bytes of some keys."""
    data = [encode_record(r) for r in records]
    for k, v in (raw or {}).items():
        data[k] = v
    natoms = natoms or [len(r[K.Z]) for r in records]
    meta = make_metadata(natoms=natoms, ids=[r[K.ID] for r in records], graph=graph, source={}, split="val",
                         shard=0, num_shards=1, split_records=len(records))
    return write_shard(path, data, metadata=meta)


def _radius_edges(rec):
    return np.flatnonzero(rec[K.EDGE_TYPE] == K.EDGE_RADIUS)


def tamper_out_of_range(rec):
    rec[K.EDGE_INDEX] = rec[K.EDGE_INDEX].copy()
    rec[K.EDGE_INDEX][0, 0] = len(rec[K.Z]) + 5


def tamper_duplicate(rec):  # an in-range index: edge 1 becomes a copy of edge 0
    k0, k1 = _radius_edges(rec)[:2]
    for key in (K.EDGE_INDEX,):
        rec[key] = rec[key].copy()
        rec[key][:, k1] = rec[key][:, k0]
    rec[K.CELL_OFFSETS] = rec[K.CELL_OFFSETS].copy()
    rec[K.CELL_OFFSETS][k1] = rec[K.CELL_OFFSETS][k0]


def tamper_long_edge(rec):
    k = _radius_edges(rec)[0]
    rec[K.CELL_OFFSETS] = rec[K.CELL_OFFSETS].copy()
    rec[K.CELL_OFFSETS][k] += np.array([3, 0, 0])


def tamper_nan(rec):
    rec[K.POS_U] = rec[K.POS_U].copy()
    rec[K.POS_U][1, 2] = np.nan


def tamper_cell(rec):
    rec[K.CELL_R] = rec[K.CELL_R].copy()
    rec[K.CELL_R][0, 0] = np.inf


@pytest.mark.parametrize("tamper, reason", [
    (tamper_out_of_range, "edge 0 joins atoms [9, 0], outside 0..3 (1 such edges)"),
    (tamper_duplicate, "appears more than once"),
    (tamper_long_edge, "beyond the graph's cutoff 4 A (1 such edges)"),
    (tamper_nan, "field 'pos_u' holds non-finite values (NaN or infinity)"),
    (tamper_cell, "field 'cell_r' holds non-finite values (NaN or infinity)"),
])
def test_tampered_record_is_refused_naming_shard_and_record(tmp_path, tamper, reason):
    recs = graph_records()
    tamper(recs[1])
    path = write_db(tmp_path / "db.lmdb", recs, graph=GRAPH)
    ds = LmdbDataset(path)
    ds[0], ds[2]  # the others read
    with pytest.raises(FormatError) as info:
        ds[1]
    assert str(info.value).startswith(f"{path} record 1 (id 's1'): ")
    assert reason in str(info.value)


def test_counts_truncation_and_altered_bytes(tmp_path):
    recs = graph_records()
    path = write_db(tmp_path / "count.lmdb", recs, natoms=[4, 5, 4])
    with pytest.raises(FormatError, match=r"record 1 \(id 's1'\): 4 atoms, but the database metadata lists 5"):
        LmdbDataset(path)[1]
    data = encode_record(recs[1])
    altered = data[:-9] + bytes([data[-9] ^ 0xFF]) + data[-8:]
    path = write_db(tmp_path / "bytes.lmdb", recs, raw={1: data[:6], 2: altered})
    ds = LmdbDataset(path)
    with pytest.raises(FormatError) as info:
        ds[1]
    assert str(info.value) == f"{path} record 1: truncated record (6 bytes; the fixed header alone is 8)"
    assert "magic" not in str(info.value)
    with pytest.raises(FormatError, match="record 2: corrupt record .checksum of the array data does not match"):
        ds[2]
    skipping = LmdbDataset(path, skip_bad=True)
    assert len(skipping) == 1 and skipping.ids == ["s0"] and len(skipping.skipped) == 2
    assert skipping[0][K.ID] == "s0"


def toy_db(path, indices, bad=None):
    """Toy structures as one shard; record ``bad`` gets a NaN position."""
    recs = []
    for i in indices:
        d = toy.make_structure(i)
        rec = {k: d[k].numpy() for k in (K.POS_U, K.POS_R, K.Z, K.EDGE_INDEX, K.CELL_OFFSETS, K.EDGE_TYPE)}
        rec.update({K.CELL_U: d[K.CELL_U][0].numpy(), K.CELL_R: d[K.CELL_R][0].numpy(),
                    K.PBC: d[K.PBC][0].numpy(), K.ID: d[K.ID]})
        recs.append(rec)
    if bad is not None:
        recs[bad][K.POS_U] = recs[bad][K.POS_U].copy()
        recs[bad][K.POS_U][0, 0] = np.nan
    return write_db(path, recs)


def test_training_and_evaluation_stop_on_a_bad_record_or_skip_it(tmp_path, capsys):
    train_db = toy_db(tmp_path / "train.lmdb", range(8), bad=5)
    val_db = toy_db(tmp_path / "val.lmdb", range(100, 104), bad=2)
    good_val = toy_db(tmp_path / "good_val.lmdb", range(100, 104))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {{name: engine_toy_model, hidden_channels: 8}}\nloss: {{name: engine_toy_loss}}\n"
                   f"dtype: float64\ndevice: cpu\ndata: {{train: {train_db}, val: {good_val}, batch_size: 4}}\n"
                   f"schedule: {{epoch_length: 3, max_epochs: 1}}\nlog: {{progress_bar: false, figures: false}}\n")
    assert main(["train", "--config", str(cfg), "--run-dir", str(tmp_path / "a")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (f"e3relax train: error: {train_db} record 5 (id 'toy-5'): field 'pos_u' holds non-finite "
                    "values (NaN or infinity)")
    assert main(["train", "--config", str(cfg), "--run-dir", str(tmp_path / "b"), "--skip-bad-records"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped_records"] == 1 and summary["iteration"] == 3

    best = tmp_path / "b" / "checkpoints" / "best.pt"
    args = ["evaluate", "--checkpoint", str(best), "--data", str(val_db), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "e1")]) == 2
    assert f"{val_db} record 2 (id 'toy-102'): field 'pos_u' holds non-finite" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "e2"), "--skip-bad-records"]) == 0
    assert "skipped 1 bad record(s)" in capsys.readouterr().err
    with open(tmp_path / "e2" / "per_structure.csv") as fh:
        ids = [r["id"] for r in csv.DictReader(fh)]
    assert ids == ["toy-100", "toy-101", "toy-103"]
    doc = json.loads((tmp_path / "e2" / "summary.json").read_text())
    assert doc["skipped_records"] == 1 and doc["data"] == str(val_db) and doc["num_structures"] == 3
