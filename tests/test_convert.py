"""Conversion driver and the two importers on tiny fixtures written with ASE (bad items included)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data_fixtures import graph_name, graph_spec, write_poscar_pairs, write_vasp_dirs
from e3relax import keys
from e3relax.cli.main import main
from e3relax.datasets import convert as convert_mod
from e3relax.datasets.convert import convert
from e3relax.datasets.importers.base import RawPair, Skipped
from e3relax.datasets.reader import LmdbDataset
from e3relax.registry import IMPORTERS


def _outcomes(report: dict) -> dict[str, str]:
    out = {e["id"]: e["code"] for e in report["skipped"]}
    out.update({sid: "ok" for sid in report["rotation_removed_deg"]})
    return out


def _all_records(out) -> dict[str, dict]:
    recs = {}
    for split in ("train", "val", "test"):
        ds = LmdbDataset(out / f"{split}.lmdb", dtype=torch.float64)
        for k in range(len(ds)):
            r = ds.record(k)
            recs[r[keys.ID]] = dict(r, split=split)
    return recs


@pytest.mark.parametrize("as_tarballs", [True, False])
def test_poscar_pairs_report_names_every_bad_item(tmp_path, as_tarballs):
    expect = write_poscar_pairs(tmp_path / "src", as_tarballs=as_tarballs)
    importer = IMPORTERS.build({"name": "poscar_pairs", "src": tmp_path / "src"})
    items = {it.id: it for it in importer}
    assert isinstance(items["onlyu"], Skipped) and "no relaxed partner 'POSCAR_onlyu'" in items["onlyu"].reason
    assert isinstance(items["good1"], RawPair) and items["good1"].energy == pytest.approx(-1.5 - sorted(expect).index("good1"))
    report = convert(importer, tmp_path / "out", layout="poscar_pairs", graph=graph_spec(), progress=False)
    assert _outcomes(report) == expect
    assert report["counts"]["converted"] == 6 and report["counts"]["skipped"] == 6
    assert report["counts"]["by_reason"] == {"atom_count": 1, "coincident": 1, "missing_partner": 2,
                                             "species": 1, "unreadable": 1}
    assert sum(report["counts"]["splits"].values()) == 6
    assert report["rotation_removed_deg"]["good0"] == pytest.approx(25.0, abs=1e-6)
    assert report["rotation_removed_deg"]["good1"] < 1e-6
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["skipped"] == report["skipped"] and not (tmp_path / "out" / ".partial").exists()
    recs = _all_records(tmp_path / "out")
    assert sorted(recs) == [f"good{k}" for k in range(6)]
    assert float(recs["good2"][keys.ENERGY]) == pytest.approx(-1.5 - sorted(expect).index("good2"))


def test_workers_do_not_change_the_output(tmp_path):
    write_poscar_pairs(tmp_path / "src", seed=4)
    runs = []
    for workers, chunk in ((1, 100), (2, 3)):
        importer = IMPORTERS.build({"name": "poscar_pairs", "src": tmp_path / "src"})
        out = tmp_path / f"out{workers}"
        report = convert(importer, out, layout="poscar_pairs", graph=graph_spec(), workers=workers, chunk_size=chunk,
                         progress=False)
        runs.append((report, _all_records(out)))
    (ra, a), (rb, b) = runs
    assert ra["skipped"] == rb["skipped"] and ra["rotation_removed_deg"] == rb["rotation_removed_deg"]
    assert sorted(a) == sorted(b)
    for sid in a:
        assert a[sid]["split"] == b[sid]["split"]
        np.testing.assert_array_equal(a[sid][keys.POS_R], b[sid][keys.POS_R])
        np.testing.assert_array_equal(a[sid][keys.EDGE_INDEX], b[sid][keys.EDGE_INDEX])


def test_keep_frame_keeps_the_raw_rotation(tmp_path):
    write_poscar_pairs(tmp_path / "src")
    importer = IMPORTERS.build({"name": "poscar_pairs", "src": tmp_path / "src"})
    convert(importer, tmp_path / "a", layout="poscar_pairs", graph=graph_spec(), progress=False)
    convert(importer, tmp_path / "b", layout="poscar_pairs", graph=graph_spec(), keep_frame=True, progress=False)
    raw = next(it for it in importer if it.id == "good0").relaxed.cell.array
    a, b = _all_records(tmp_path / "a")["good0"], _all_records(tmp_path / "b")["good0"]
    np.testing.assert_allclose(b[keys.CELL_R], raw, atol=1e-9)
    assert not np.allclose(a[keys.CELL_R], raw, atol=1e-3)
    # removing a rigid rotation keeps the metric (lengths and angles) of the relaxed cell
    np.testing.assert_allclose(a[keys.CELL_R] @ a[keys.CELL_R].T, raw @ raw.T, atol=1e-9)
    assert LmdbDataset(tmp_path / "b" / "train.lmdb").metadata["source"]["keep_frame"] is True
    # the report still measures the rotation the raw frame carries; the record says none was removed
    rb = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rb["rotation_removed_deg"]["good0"] == pytest.approx(25.0, abs=1e-6)
    assert float(b[keys.ROTATION_REMOVED]) == 0.0


def test_interrupted_conversion_resumes(tmp_path, monkeypatch):
    write_poscar_pairs(tmp_path / "src", seed=1)
    importer = IMPORTERS.build({"name": "poscar_pairs", "src": tmp_path / "src"})
    out = tmp_path / "out"
    real_flush, calls = convert_mod._flush, []

    def crashing_flush(partial, chunk, results, seen):
        calls.append(chunk)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        return real_flush(partial, chunk, results, seen)

    monkeypatch.setattr(convert_mod, "_flush", crashing_flush)
    with pytest.raises(KeyboardInterrupt):
        convert(importer, out, layout="poscar_pairs", graph=graph_spec(), chunk_size=2, progress=False)
    # nothing looks complete: no split database, no report; only the partial work
    assert not (out / "report.json").exists() and not list(out.glob("*.lmdb"))
    assert len(list((out / ".partial" / "chunks").glob("chunk_*.json"))) == 2
    with pytest.raises(Exception, match="no metadata record"):
        LmdbDataset(next((out / ".partial").glob("*.lmdb/shard_*.lmdb")))
    monkeypatch.setattr(convert_mod, "_flush", real_flush)
    loaded = []
    real_load = type(importer).load
    monkeypatch.setattr(type(importer), "load", lambda self, t: loaded.append(t[0]) or real_load(self, t))
    report = convert(importer, out, layout="poscar_pairs", graph=graph_spec(), chunk_size=2, progress=False)
    assert len(loaded) == 12 - 4  # the two finished chunks were not redone
    clean = convert(IMPORTERS.build({"name": "poscar_pairs", "src": tmp_path / "src"}), tmp_path / "clean",
                    layout="poscar_pairs", graph=graph_spec(), chunk_size=2, progress=False)
    assert report["skipped"] == clean["skipped"] and report["counts"] == clean["counts"]
    a, b = _all_records(out), _all_records(tmp_path / "clean")
    assert sorted(a) == sorted(b) and all(np.array_equal(a[s][keys.POS_R], b[s][keys.POS_R]) for s in a)
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        convert(importer, out, layout="poscar_pairs", graph=graph_spec(), progress=False)


def test_changed_settings_restart_cleanly(tmp_path, monkeypatch):
    write_poscar_pairs(tmp_path / "src")
    importer = IMPORTERS.build({"name": "poscar_pairs", "src": tmp_path / "src"})
    out = tmp_path / "out"
    monkeypatch.setattr(convert_mod, "_assemble", lambda *a: (_ for _ in ()).throw(RuntimeError("crash")))
    with pytest.raises(RuntimeError, match="crash"):
        convert(importer, out, layout="poscar_pairs", graph=graph_spec(), chunk_size=2, seed=1, progress=False)
    monkeypatch.undo()
    report = convert(importer, out, layout="poscar_pairs", graph=graph_spec(), chunk_size=5, seed=2, progress=False)
    assert report["counts"]["converted"] == 6 and report["settings"]["seed"] == 2
    assert sum(len(LmdbDataset(out / f"{s}.lmdb")) for s in ("train", "val", "test")) == 6


def test_vasp_dirs_layout_and_trajectory(tmp_path):
    expect = write_vasp_dirs(tmp_path / "raw_dft")
    report = convert(IMPORTERS.build({"name": "vasp_dirs", "src": tmp_path}), tmp_path / "out",
                     layout="vasp_dirs", graph=graph_spec(), split_ratio="1:0:0", progress=False)
    assert _outcomes(report) == expect
    assert "no unrelaxed (OG_POSCAR" in next(e["reason"] for e in report["skipped"] if e["id"] == "10")
    ds = LmdbDataset(tmp_path / "out" / "train.lmdb")
    assert len(ds) == 4 and len(LmdbDataset(tmp_path / "out" / "test.lmdb")) == 0
    importer = IMPORTERS.build({"name": "vasp_dirs", "src": tmp_path / "raw_dft", "trajectory": True, "num_frames": 3})
    pair = next(iter(importer))
    assert len(pair.trajectory) == 3  # 5 frames (2 + 3) sub-sampled to first, middle, last
    np.testing.assert_allclose(pair.trajectory[-1].positions, pair.relaxed.positions, atol=1e-5)
    report = convert(importer, tmp_path / "traj", layout="vasp_dirs", graph=graph_spec(), split_ratio="1",
                     progress=False)
    rec = LmdbDataset(tmp_path / "traj" / "train.lmdb").record(0)
    assert rec[keys.TRAJ_POS].shape == (len(rec[keys.Z]), 3, 3) and rec[keys.TRAJ_CELL].shape == (3, 3, 3)


def test_cli_convert_and_info(tmp_path, capsys):
    write_poscar_pairs(tmp_path / "src", as_tarballs=False)
    args = ["data", "convert", "poscar_pairs", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "out"),
            "--split-ratio", "4:1:1", "--seed", "3", "--no-progress", "--graph", graph_name(), "--workers", "2"]
    assert main(args) == 0
    assert "converted 6 of 12 items" in capsys.readouterr().out
    assert main(args) == 2  # a finished conversion is not replaced without --overwrite
    assert main(args + ["--overwrite", "--warn-distance", "0.1"]) == 0
    assert main(["data", "info", str(tmp_path / "out")]) == 0
    assert "format e3relax-lmdb v1" in capsys.readouterr().out
    bad = tmp_path / "bad"
    (bad / "unrelaxed").mkdir(parents=True)
    (bad / "relaxed").mkdir()
    (bad / "unrelaxed" / "POSCAR_x").write_text("garbage")
    (bad / "relaxed" / "POSCAR_x").write_text("garbage")
    assert main(["data", "convert", "poscar_pairs", "--src", str(bad), "--out", str(tmp_path / "o2"), "--no-progress",
                 "--graph", graph_name()]) == 1
    assert main(["data", "convert", "poscar_pairz", "--src", str(bad), "--out", str(tmp_path / "o3")]) == 2


def test_vasp_frames_from_species_sorted_stage_are_reordered():
    from data_fixtures import random_atoms
    from e3relax.datasets.importers.vasp_dirs import even_frames, match_order

    rng = np.random.default_rng(5)
    ref = random_atoms(rng, "SrNbH", n=6)
    order = np.argsort(-ref.numbers, kind="stable")  # grouped by species, as a sorted POSCAR lists them
    frames = [ref[order], ref[order]]
    frames[1].positions += 0.1
    back = match_order(ref, frames, "XDATCAR")
    np.testing.assert_array_equal(back[0].numbers, ref.numbers)
    np.testing.assert_allclose(back[0].positions, ref.positions)
    np.testing.assert_allclose(back[1].positions, ref.positions + 0.1)
    far = ref[order]
    far.positions[0] += 2.5
    with pytest.raises(ValueError, match="cannot match the atom order"):
        match_order(ref, [far], "XDATCAR")
    assert even_frames(9, 3) == [0, 4, 8] and even_frames(2, 4) == [0, 0, 1, 1] and even_frames(5, 1) == [4]


def test_hard_kill_mid_conversion_then_rerun(tmp_path):
    """A process killed without any cleanup (os._exit) leaves nothing that looks complete."""
    import subprocess
    import sys
    from pathlib import Path

    write_poscar_pairs(tmp_path / "src", seed=2)
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from data_fixtures import graph_spec
from e3relax.datasets import convert as c
from e3relax.registry import IMPORTERS
real, n = c._flush, []
def flush(*a):
    n.append(1)
    if len(n) == 4:
        os._exit(9)
    return real(*a)
c._flush = flush
imp = IMPORTERS.build({{"name": "poscar_pairs", "src": {str(tmp_path / "src")!r}}})
c.convert(imp, {str(tmp_path / "out")!r}, layout="poscar_pairs", graph=graph_spec(), chunk_size=2, workers=1,
          progress=False)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    out = tmp_path / "out"
    assert not (out / "report.json").exists() and not list(out.glob("*.lmdb"))
    importer = IMPORTERS.build({"name": "poscar_pairs", "src": tmp_path / "src"})
    report = convert(importer, out, layout="poscar_pairs", graph=graph_spec(), chunk_size=2, progress=False)
    assert report["counts"]["items"] == 12 and report["counts"]["converted"] == 6
    assert report["throughput"]["items_this_run"] == 12 - 6  # three chunks of two were kept
    assert sum(len(LmdbDataset(out / f"{s}.lmdb")) for s in ("train", "val", "test")) == 6


class _ListImporter:
    """An importer that only defines __iter__ (the base protocol), with published splits."""

    def __init__(self, items):
        self.items, self.src = items, "memory"

    def __iter__(self):
        return iter(self.items)


def test_published_splits_duplicates_and_prediction_only_items(tmp_path):
    from data_fixtures import random_atoms, relax_like
    from e3relax.datasets.importers.base import Importer

    rng = np.random.default_rng(7)
    atoms = [random_atoms(rng, "MgO", n=2 + k % 3) for k in range(5)]
    items = [RawPair(f"p{k}", a, relax_like(a, rng), split=s) for k, (a, s) in enumerate(zip(atoms, ["val", "val", "test", "train"]))]
    items.append(RawPair("p0", atoms[4], relax_like(atoms[4], rng), split="train"))  # same id again
    items.append(RawPair("q", atoms[4], None, split="predict"))  # prediction only: no relaxed side
    importer = type("ListImporter", (_ListImporter, Importer), {})(items)
    report = convert(importer, tmp_path / "out", layout="list", graph=graph_spec(), workers=2, chunk_size=2,
                     progress=False)
    assert report["counts"]["splits"] == {"train": 1, "val": 2, "test": 1, "predict": 1}
    assert report["skipped"] == [{"id": "p0", "code": "duplicate_id", "source": "",
                                  "reason": "id 'p0' already converted from an earlier item"}]
    assert report["counts"]["unlabelled"] == 1
    assert LmdbDataset(tmp_path / "out" / "val.lmdb").ids == ["p0", "p1"]
    pred = LmdbDataset(tmp_path / "out" / "predict.lmdb").record(0)
    assert keys.POS_R not in pred and pred[keys.ID] == "q"


def _frame_runs(root, n_runs: int = 6, seed: int = 3):
    """vasp_dirs runs whose first stage is species-sorted and starts at the final structure (as in
    Sr-Nb-H); returns {id: (relaxed Atoms, number of distinct frames)}."""
    from ase.io import write

    from data_fixtures import random_atoms, relax_like, write_xdatcar

    rng = np.random.default_rng(seed)
    runs = {}
    for k in range(n_runs):
        run = root / str(k + 1)
        (run / "MP_inputs").mkdir(parents=True)
        og = random_atoms(rng, "SrNbH", n=6)
        fin = relax_like(og, rng)
        wander = [relax_like(fin, rng) for _ in range(2)]
        order = np.argsort(-fin.numbers, kind="stable")  # stage 1 lists atoms grouped by species
        write(str(run / "MP_inputs" / "OG_POSCAR"), og, format="vasp", direct=True)
        write_xdatcar(run / "MP_inputs" / "XDATCAR", [f[order] for f in [fin] + wander])
        write_xdatcar(run / "XDATCAR", [wander[-1], wander[-1], relax_like(fin, rng), fin])
        write(str(run / "CONTCAR"), fin, format="vasp", direct=True)
        runs[str(k + 1)] = (fin, 3)  # fin and the repeated frame are dropped: 2 + 1 distinct frames
    return runs


def test_trajectory_frames_become_training_pairs_split_by_parent(tmp_path):
    runs = _frame_runs(tmp_path / "raw")
    importer = IMPORTERS.build({"name": "vasp_dirs", "src": tmp_path / "raw", "frames_as_pairs": True})
    report = convert(importer, tmp_path / "out", layout="vasp_dirs", graph=graph_spec(), split_ratio="1:1",
                     progress=False)
    c = report["counts"]
    train = LmdbDataset(tmp_path / "out" / "train.lmdb")
    val = LmdbDataset(tmp_path / "out" / "val.lmdb")
    frames = LmdbDataset(tmp_path / "out" / "train_frames.lmdb")
    assert c["items"] == c["converted"] == 6 and len(train) + len(val) == 6 and len(train) and len(val)
    assert c["frames"] == {"converted": 3 * len(train), "parents": len(train), "skipped": 0, "held_out": 3 * len(val)}
    assert c["splits"] == {"train": len(train), "val": len(val), "train_frames": 3 * len(train)}
    parents = [frames.record(i)[keys.PARENT] for i in range(len(frames))]
    assert sorted(set(parents)) == sorted(train.ids)  # no frame of a validation pair is written
    assert frames.ids[0] == f"{parents[0]}:frame000"
    for i in range(len(frames)):
        rec = frames.record(i)
        fin = runs[rec[keys.PARENT]][0]
        np.testing.assert_array_equal(rec[keys.Z], fin.numbers)  # back in the relaxed (= unrelaxed) order
        np.testing.assert_allclose(rec[keys.CELL_R], fin.cell.array, atol=1e-5)
        assert np.abs(rec[keys.POS_U] - rec[keys.POS_R]).max() < 1.0  # a frame near its minimum
    assert "train_frames" not in LmdbDataset(tmp_path / "out" / "val.lmdb").metadata.get("split", "")
    assert frames.metadata["split"] == "train_frames"
    few = IMPORTERS.build({"name": "vasp_dirs", "src": tmp_path / "raw", "frames_as_pairs": True, "max_frames": 2})
    assert [len(p.frames) for p in few] == [2] * 6
    with pytest.raises(ValueError, match="exclude each other"):
        IMPORTERS.build({"name": "vasp_dirs", "src": tmp_path / "raw", "frames_as_pairs": True, "trajectory": True})


def test_unreadable_frames_keep_the_pair_and_are_reported(tmp_path):
    _frame_runs(tmp_path / "raw", n_runs=2)
    (tmp_path / "raw" / "1" / "XDATCAR").write_text("garbage\n")
    report = convert(IMPORTERS.build({"name": "vasp_dirs", "src": tmp_path / "raw", "frames_as_pairs": True}),
                     tmp_path / "out", layout="vasp_dirs", graph=graph_spec(), split_ratio="1", progress=False)
    assert report["counts"]["converted"] == 2 and report["counts"]["frames"]["converted"] == 2 + 3
    assert any("frames not used" in w and "XDATCAR" in w for w in report["warnings"]["1"])
