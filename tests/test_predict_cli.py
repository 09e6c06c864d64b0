"""``e3relax predict`` / ``e3relax pretrained``: discovery, naming, formats, summary, failures, refinement."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.io import read, write

import e3relax.models  # noqa: F401 - registers the models
from e3relax.cli.main import main
from e3relax.predict.io import find_inputs, output_names, read_structures
from e3relax.registry import MODELS

TINY = {"name": "e3relax", "hidden_channels": 8, "num_layers": 2, "num_rbf": 8}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"format_version": 1, "config": {"model": TINY, "graph": {"name": "periodic_multi_edge", "cutoff": 5.0,
                                                                         "max_neighbors": 12}},
                "ema_model": MODELS.build(TINY).state_dict()}, path)
    return path


@pytest.fixture()
def inputs(tmp_path) -> Path:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    nacl = bulk("NaCl", "rocksalt", a=5.6)
    write(d / "nacl.cif", nacl)
    gaas = bulk("GaAs", "zincblende", a=5.65)
    gaas.rattle(0.05, seed=1)
    write(d / "my_structure", gaas, format="vasp")  # a POSCAR with an arbitrary name
    write(d / "sub" / "CONTCAR", bulk("Si", "diamond", a=5.43), format="vasp")
    write(d / "frames.extxyz", [bulk("Cu", "fcc", a=3.6), bulk("Fe", "bcc", a=2.87) * (2, 1, 1)])
    (d / "notes.md").write_text("not a structure\n")
    return d


def rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_find_inputs_and_names(inputs):
    files, problems = find_inputs([str(inputs), str(inputs / "*.cif"), str(inputs / "missing.cif")])
    names = sorted(p.name for p in files)
    assert names == ["CONTCAR", "frames.extxyz", "my_structure", "nacl.cif"]  # folder found all, glob added nothing new
    assert problems == [(str(inputs / "missing.cif"), "no such file or folder")]
    a, b = Path("x/POSCAR"), Path("y/POSCAR")
    assert output_names([a, b, Path("z/q.cif")]) == {a: "x_POSCAR", b: "y_POSCAR", Path("z/q.cif"): "q"}
    assert len(read_structures(inputs / "frames.extxyz")) == 2
    with pytest.raises(ValueError, match="notes.md: not a readable structure file"):
        read_structures(inputs / "notes.md")


@pytest.mark.parametrize("fmt", ["cif", "vasp", "extxyz"])
def test_predict_writes_every_structure(inputs, ckpt, tmp_path, fmt):
    out = tmp_path / "out"
    rc = main(["predict", str(inputs), "--checkpoint", str(ckpt), "--out", str(out), "--format", fmt,
               "--batch-size", "2", "--no-progress"])
    assert rc == 0
    written = sorted(p.name for p in out.iterdir())
    contcar = "CONTCAR" if fmt == "vasp" else "relaxed"  # ASE and pymatgen read any *CONTCAR* as VASP
    assert written == sorted([f"nacl.{fmt}", f"my_structure.{fmt}", f"{contcar}.{fmt}", f"frames_0.{fmt}",
                              f"frames_1.{fmt}", "summary.csv"])
    src = read(inputs / "my_structure", format="vasp")
    got = read(out / f"my_structure.{fmt}")
    assert list(got.numbers) == list(src.numbers)  # same atom order
    table = {r["id"]: r for r in rows(out / "summary.csv")}
    assert len(table) == 5 and all(not r["error"] for r in table.values())
    r = table[str(inputs / "frames.extxyz") + "@1"]
    assert r["atoms"] == "2" and r["index"] == "1"
    ratio = abs(np.linalg.det(got.cell.array) / np.linalg.det(src.cell.array))
    assert float(table[str(inputs / "my_structure")]["volume_change"]) == pytest.approx(ratio - 1, abs=1e-4)
    for key in ("max_displacement", "min_distance"):
        assert float(r[key]) > 0
    assert r["unphysical"] in ("True", "False")


def test_bad_file_is_reported_and_the_rest_written(inputs, ckpt, tmp_path):
    (inputs / "broken.cif").write_text("data_x\n_cell_length_a 3\n")
    out = tmp_path / "out"
    rc = main(["predict", str(inputs / "*.cif"), str(inputs / "my_structure"), "--checkpoint", str(ckpt),
               "--out", str(out), "--no-progress"])
    assert rc == 1
    assert (out / "nacl.cif").exists() and (out / "my_structure.cif").exists()
    bad = [r for r in rows(out / "summary.csv") if r["error"]]
    assert len(bad) == 1 and bad[0]["id"].endswith("broken.cif") and "not a readable structure file" in bad[0]["error"]


def test_pretrained_listing_and_name(ckpt, tmp_path, monkeypatch, capsys, caplog, inputs):
    import shutil

    import e3relax.predict.pretrained as pp

    folder = tmp_path / "pretrained"
    folder.mkdir()
    shutil.copy(ckpt, folder / "toy_s0.pt")
    (folder / "index.json").write_text(json.dumps({"toy": {"members": ["toy_s0.pt"], "card": "toy.md",
                                                           "description": "a toy"}}))
    monkeypatch.setattr(pp, "PRETRAINED_DIR", folder)
    assert main(["pretrained"]) == 0
    assert "toy: a toy" in capsys.readouterr().out
    assert main(["predict", str(inputs / "nacl.cif"), "--checkpoint", "toy", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    assert main(["predict", str(inputs / "nacl.cif"), "--checkpoint", "nope", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("e3relax predict: error: ") and "checkpoint 'nope'" in err and "shipped: toy" in err


def test_shipped_index_is_consistent():
    from e3relax.predict.pretrained import PRETRAINED_DIR, pretrained_index, resolve_checkpoints

    index = pretrained_index()
    if not index:
        pytest.skip("no pretrained checkpoints in this checkout")
    for name, entry in index.items():
        files = resolve_checkpoints(name)
        assert all(f.stat().st_size < 20e6 for f in files)
        assert (PRETRAINED_DIR / entry["card"]).exists()


def test_refine_chgnet_reports_steps(ckpt, tmp_path):
    pytest.importorskip("chgnet")
    src = tmp_path / "si.cif"
    write(src, bulk("Si", "diamond", a=5.43))
    out = tmp_path / "out"
    assert main(["predict", str(src), "--checkpoint", str(ckpt), "--out", str(out), "--refine", "chgnet",
                 "--max-steps", "3", "--no-progress"]) == 0
    (r,) = rows(out / "summary.csv")
    assert 1 <= int(r["refine_steps"]) <= 3 and r["refine_converged"] in ("True", "False")
    assert list(read(out / "si.cif").numbers) == [14, 14]
