"""Every registered model trains through the engine (two steps, float64, CPU) and is evaluated."""
from __future__ import annotations

import math

import pytest
import torch

from e3relax import keys as K
from e3relax.engine.config import resolve_config
from e3relax.engine.trainer import train
from e3relax.registry import MODELS
from e3relax.testing import random_structure, to_data


def _data():
    out = []
    for i in range(8):
        d = to_data(random_structure(3 + i % 3, seed=i, labels=True))
        d[K.ID] = f"s{i}"
        out.append(d)
    return out


def _config(tmp_path, name: str) -> dict:
    return resolve_config({
        "run_dir": str(tmp_path), "device": "cpu", "dtype": "float64",
        "model": {"name": name, **MODELS.get(name).test_config()}, "data": {"batch_size": 4},
        "schedule": {"epoch_length": 2, "max_epochs": 1}, "log": {"tensorboard": False, "progress_bar": False},
    })


PACKAGE_MODELS = [n for n in MODELS.names() if MODELS.get(n).__module__.startswith("e3relax.") and n != "dummy"]


@pytest.mark.parametrize("name", PACKAGE_MODELS)
def test_model_trains_and_evaluates(name, tmp_path):
    data = _data()
    before = MODELS.build(_config(tmp_path, name)["model"])
    out = train(_config(tmp_path, name), datasets={"train": data, "val": data[:4]})
    assert out["iteration"] == 2 and math.isfinite(out["best_val_coord_mae"])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["config"]["model"]["name"] == name
    assert set(ckpt["model"]) == set(before.state_dict())


def test_parameter_free_model_is_refused(tmp_path):
    data = _data()
    with pytest.raises(ValueError, match="model 'dummy' has no trainable parameters"):
        train(_config(tmp_path, "dummy"), datasets={"train": data, "val": data[:4]})
