"""Checkpoints record the elements they were trained on; predictions holding any other are flagged."""
from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from data_fixtures import graph_spec, write_poscar_pairs
from e3relax import keys
from e3relax.datasets.convert import convert
from e3relax.datasets.reader import LmdbDataset
from e3relax.engine.checkpoint import load_checkpoint
from e3relax.engine.config import resolve_config
from e3relax.engine.data import element_counts
from e3relax.engine.trainer import train
from e3relax.predict import Relaxer
from e3relax.registry import IMPORTERS, MODELS

from test_e3relax_learns import PNICTIDES, _real_batch


def _scan(ds) -> dict[int, list[int]]:
    atoms, structures = Counter(), Counter()
    for k in range(len(ds)):
        z = ds[k][keys.Z].tolist()
        atoms.update(z)
        structures.update(set(z))
    return {z: [atoms[z], structures[z]] for z in sorted(atoms)}


def test_conversion_records_element_counts_that_match_the_records(tmp_path):
    write_poscar_pairs(tmp_path / "src", as_tarballs=False)
    convert(IMPORTERS.build({"name": "poscar_pairs", "src": tmp_path / "src"}), tmp_path / "out",
            layout="poscar_pairs", graph=graph_spec(), split_ratio="1", chunk_size=2, progress=False)
    ds = LmdbDataset(tmp_path / "out" / "train.lmdb")
    assert len(ds.shards) > 1  # summed over shards
    assert ds.elements == _scan(ds) and element_counts(ds) == _scan(ds)
    assert element_counts(list(ds[k] for k in range(len(ds)))) == _scan(ds)  # in memory: read once


def _uo2() -> Atoms:
    return bulk("UO2", "fluorite", a=5.47)


@pytest.mark.data
def test_a_model_trained_on_pnictides_flags_uranium_and_oganesson(tmp_path):
    if not PNICTIDES.is_dir():
        pytest.skip(f"real data folder {PNICTIDES} is absent")
    data = _real_batch().to_data_list()
    config = resolve_config({
        "run_dir": str(tmp_path / "run"), "device": "cpu", "seed": 0,
        "model": {"name": "e3relax", **MODELS.get("e3relax").test_config()},
        "data": {"batch_size": len(data)}, "schedule": {"epoch_length": 1, "max_epochs": 1},
        "log": {"tensorboard": False, "progress_bar": False},
    })
    train(config, datasets={"train": data, "val": data})
    seen = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["train_elements"]
    assert seen == _scan(data)
    relaxer = Relaxer.from_checkpoint(tmp_path / "run")
    known = data[0]
    inside = Atoms(numbers=known[keys.Z].numpy(), positions=known[keys.POS_U].numpy(),
                   cell=known[keys.CELL_U][0].numpy(), pbc=True)
    og = Atoms("Og2", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * 4.0, pbc=True)
    res = relaxer.relax([_uo2(), og, inside])
    assert res[0]["unseen_elements"] == ["O", "U"] and "unseen_elements" in res[0]["flags"]
    assert res[1]["unseen_elements"] == ["Og"] and res[1]["unphysical"]
    assert res[2]["unseen_elements"] == [] and "unseen_elements" not in res[2]["flags"]


def test_predict_cli_writes_the_column(tmp_path):
    """A model trained on H..B (the toy set) flags NaCl and UO2 in summary.csv, naming the elements."""
    from e3relax.cli.main import main
    from test_engine_toy import make_dataset

    bulk("NaCl", "rocksalt", a=5.6).write(tmp_path / "NaCl.cif")
    _uo2().write(tmp_path / "UO2.cif")
    config = resolve_config({
        "run_dir": str(tmp_path / "run"), "device": "cpu", "seed": 0,
        "model": {"name": "e3relax", **MODELS.get("e3relax").test_config()},
        "data": {"batch_size": 2}, "schedule": {"epoch_length": 1, "max_epochs": 1},
        "log": {"tensorboard": False, "progress_bar": False},
    })
    train(config, datasets={"train": make_dataset(6), "val": make_dataset(2)})
    assert set(load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["train_elements"]) <= {1, 2, 3, 4, 5}
    assert main(["predict", str(tmp_path / "NaCl.cif"), str(tmp_path / "UO2.cif"), "--checkpoint",
                 str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        rows = {r["input"].split("/")[-1]: r for r in csv.DictReader(f)}
    assert rows["UO2.cif"]["unseen_elements"] == "O;U" and rows["NaCl.cif"]["unseen_elements"] == "Na;Cl"
    assert "unseen_elements" in rows["UO2.cif"]["flags"]


def test_older_checkpoints_flag_nothing(tmp_path):
    relaxer = Relaxer.from_checkpoint("pnictides", ensemble=False)
    if relaxer.train_elements is None:  # shipped before the elements were recorded
        assert relaxer.relax(_uo2())["unseen_elements"] is None
    else:
        assert relaxer.relax(_uo2())["unseen_elements"] == ["O", "U"]
