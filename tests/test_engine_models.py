"""Every registered model trains through the engine (a few steps, float64, CPU) and is evaluated.

A hook records the weights the engine built and the loss of every step: the weights must change
and the training loss must fall (the batch is the same at every step), so a run whose optimiser
never touches the model, or whose loss ignores it, fails here.
"""
from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Events

from e3relax import keys as K
from e3relax.engine.config import resolve_config
from e3relax.engine.trainer import train
from e3relax.registry import MODELS
from e3relax.testing import random_structure, to_data

STEPS = 4
#: filled by :func:`record`, which the engine calls once the model is built, before the first step
RECORD: dict = {}


def record(trainer, evaluator, context) -> None:
    """Engine hook: the initial weights, and the training loss of every step."""
    RECORD["before"] = {k: v.detach().clone() for k, v in context["model"].named_parameters() if v.requires_grad}
    RECORD["losses"] = losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: losses.append(engine.state.output["loss"]))


def _data(num: int = 4):
    out = []
    for i in range(num):
        d = to_data(random_structure(3 + i % 3, seed=i, labels=True))
        d[K.ID] = f"s{i}"
        out.append(d)
    return out


def _config(tmp_path, name: str) -> dict:
    return resolve_config({
        "run_dir": str(tmp_path), "device": "cpu", "dtype": "float64", "hooks": [f"{__name__}.record"],
        "model": {"name": name, **MODELS.get(name).test_config()}, "data": {"batch_size": 4},
        "optim": {"lr": 1e-3},
        "schedule": {"epoch_length": STEPS, "max_epochs": 1}, "log": {"tensorboard": False, "progress_bar": False},
    })


#: models that train (the Dummy and the fitted-only atomic-volume prior have no trainable parameters)
PACKAGE_MODELS = [n for n in MODELS.names() if MODELS.get(n).__module__.startswith("e3relax.")
                  and any(p.requires_grad for p in MODELS.build({"name": n, **MODELS.get(n).test_config()}).parameters())]


@pytest.mark.parametrize("name", PACKAGE_MODELS)
def test_model_trains_and_evaluates(name, tmp_path):
    data = _data()
    RECORD.clear()
    out = train(_config(tmp_path, name), datasets={"train": data, "val": data})
    assert out["iteration"] == STEPS and math.isfinite(out["best_val_coord_mae"])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["config"]["model"]["name"] == name
    before, after = RECORD["before"], ckpt["model"]
    assert set(before) <= set(after)
    changed = [k for k, v in before.items() if not torch.equal(v, after[k].to(v.dtype))]
    assert len(changed) >= 0.5 * len(before), f"{name}: only {len(changed)} of {len(before)} parameters changed"
    losses = RECORD["losses"]
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0], f"{name}: training loss did not fall over {STEPS} steps on one batch: {losses}"


def test_parameter_free_model_is_refused(tmp_path):
    data = _data()
    with pytest.raises(ValueError, match="model 'dummy' has no trainable parameters"):
        train(_config(tmp_path, "dummy"), datasets={"train": data, "val": data})
