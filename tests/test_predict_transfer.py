"""Transfer learning: fine-tune a (pretrained-style, slim) checkpoint on a user's ``custom`` layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from ase.build import bulk
from ase.io import write

import e3relax.models  # noqa: F401 - registers the models
from e3relax.cli.main import main
from e3relax.engine.checkpoint import load_checkpoint
from e3relax.predict import Relaxer
from e3relax.registry import MODELS

TINY = {"name": "e3relax", "hidden_channels": 8, "num_layers": 2, "num_rbf": 8}


def custom_layout(root: Path) -> Path:
    """The authors' custom layout: {train,val}.csv with atoms_id, CIF/<id>_{unrelaxed,relaxed}.cif."""
    (root / "CIF").mkdir(parents=True)
    ids = {"train": ["a1", "a2", "a3", "a4"], "val": ["b1", "b2"]}
    rng = np.random.default_rng(0)
    for split, names in ids.items():
        (root / f"{split}.csv").write_text("atoms_id\n" + "\n".join(names) + "\n")
        for i, sid in enumerate(names):
            relaxed = bulk("NaCl", "rocksalt", a=5.5 + 0.05 * i)
            unrelaxed = relaxed.copy()
            unrelaxed.set_cell(relaxed.cell.array * (1.0 + 0.03 * rng.standard_normal()), scale_atoms=True)
            unrelaxed.rattle(0.05, seed=i)
            write(root / "CIF" / f"{sid}_unrelaxed.cif", unrelaxed)
            write(root / "CIF" / f"{sid}_relaxed.cif", relaxed)
    return root


def test_finetune_from_slim_checkpoint(tmp_path):
    src = custom_layout(tmp_path / "mydata")
    data = tmp_path / "lmdb"
    assert main(["data", "convert", "custom", "--src", str(src), "--out", str(data), "--no-progress",
                 "--graph-opt", "cutoff=5.0", "--graph-opt", "max_neighbors=12"]) == 0
    torch.manual_seed(3)
    base = tmp_path / "base.pt"
    torch.save({"format_version": 1, "config": {"model": TINY, "graph": {"name": "periodic_multi_edge"}},
                "ema_model": MODELS.build(TINY).state_dict()}, base)
    cfg = {"device": "cpu", "model": TINY, "data": {"train": str(data / "train.lmdb"), "val": str(data / "val.lmdb"),
                                                    "batch_size": 2},
           "optim": {"lr": 1.0e-3}, "schedule": {"epoch_length": 2, "max_epochs": 1},
           "log": {"tensorboard": False, "figures": False, "progress_bar": False}}
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(cfg))
    runs = {}
    for tag, extra in (("ft", ["--init-from", str(base)]), ("scratch", [])):
        run_dir = tmp_path / tag
        assert main(["train", "--config", str(tmp_path / "ft.yaml"), "--run-dir", str(run_dir), *extra]) == 0
        runs[tag] = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    start = torch.load(base, weights_only=True)["ema_model"]
    # two small Adam steps (lr 1e-3; 1e-2 for the zero-initialised last projections, which train at 10x the
    # rate) move every weight by at most ~2e-2 from where it started; a fresh initialisation is far from it
    ft_dev = max(float((runs["ft"][k] - start[k]).abs().max()) for k in start if start[k].is_floating_point())
    sc_dev = max(float((runs["scratch"][k] - start[k]).abs().max()) for k in start if start[k].is_floating_point())
    assert ft_dev < 3e-2 < sc_dev
    relaxer = Relaxer.from_checkpoint(tmp_path / "ft")  # the fine-tuned run folder predicts directly
    res = relaxer.relax(bulk("NaCl", "rocksalt", a=5.6))
    assert res["num_atoms"] == 2 and np.isfinite(res["final_structure"].positions).all()
