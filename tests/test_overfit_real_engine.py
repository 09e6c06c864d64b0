"""Every model overfits the same handful of real DFT pairs through the same Ignite engine (slow).

Six pnictide pairs of at most 8 atoms from ../shared/data (skipped where absent), the CPU-sized
config of each model (E3Relax narrowed to 32 channels to keep the run short), 300 steps of AdamW at
lr 3e-3 with a short EMA, validated on the same pairs. Run with ``pytest -m slow tests/test_overfit_real_engine.py``.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from e3relax import keys
from e3relax.benchmark.suite import config_path
from e3relax.engine.config import resolve_config
from e3relax.engine.trainer import train
from e3relax.metrics import pooled_coord_mae
from e3relax.records import collate

from test_e3relax_learns import PNICTIDES, _real_batch

CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"
MODELS_TO_CHECK = ["e3relax", "painn", "egnn", "hegnn", "gotennet", "equiformer_v2", "deeprelax"]
OVERRIDES = {"e3relax": {"hidden_channels": 32, "num_rbf": 16, "num_layers": 3}}


def _pairs():
    if not PNICTIDES.is_dir():
        pytest.skip(f"real data folder {PNICTIDES} is absent")
    return _real_batch().to_data_list()


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("name", MODELS_TO_CHECK)
def test_model_overfits_real_pairs_through_the_engine(name, tmp_path):
    data = _pairs()
    spec = yaml.safe_load(config_path(CONFIGS, name).read_text())
    model = {**spec["model"], **OVERRIDES.get(name, {})}
    loss = spec.get("loss", {"name": "layerwise"})
    config = resolve_config({
        "run_dir": str(tmp_path), "device": "cpu", "seed": 0, "model": model, "loss": loss,
        "data": {"batch_size": len(data)},
        "optim": {"lr": 3e-3},
        "ema": {"decay": 0.9},
        "schedule": {"epoch_length": 50, "max_epochs": 6, "early_stop_patience": None},
        "log": {"tensorboard": False, "progress_bar": False},
    })
    out = train(config, datasets={"train": data, "val": data})
    batch = collate(data)
    dummy = pooled_coord_mae(batch[keys.POS_U], batch[keys.POS_R]).item()
    best = out["best_val_coord_mae"]
    print(f"{name}: best validation coordinate MAE {best:.4f} A vs Dummy {dummy:.4f} A ({best / dummy:.2f}x)")
    assert math.isfinite(best)
    assert best < 0.7 * dummy, (name, best, dummy)
