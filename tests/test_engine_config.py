"""Run configuration: defaults, YAML, dotted overrides, validation errors, and the data sampler."""
from __future__ import annotations

import pytest

from e3relax.engine.config import DEFAULTS, ConfigError, load_config, parse_value, resolve_config, save_config
from e3relax.engine.data import StreamBatchSampler


def test_defaults_follow_reference_script():
    cfg = resolve_config({})
    assert cfg["optim"] == {"lr": 1e-4, "weight_decay": 0.0, "amsgrad": True, "betas": [0.9, 0.999],
                            "grad_clip": 150.0, "max_nonfinite_steps": 10,
                            "nonfinite_rewinds": 2, "rewind_lr_factor": 0.5}
    assert cfg["ema"]["decay"] == 0.999
    assert (cfg["schedule"]["plateau_factor"], cfg["schedule"]["plateau_patience"]) == (0.8, 5)
    assert cfg["schedule"]["early_stop_patience"] == 15 and cfg["data"]["batch_size"] == 32
    assert cfg["dtype"] == "float32" and cfg["device"] == "auto"


@pytest.mark.parametrize("text, value", [("3e-4", 3e-4), ("1e-4", 1e-4), ("12", 12), ("true", True),
                                         ("null", None), ("None", None), ("[1, 2]", [1, 2]), ("abc", "abc"),
                                         ("runs/x", "runs/x")])
def test_parse_value(text, value):
    assert parse_value(text) == value


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: {name: e3relax, hidden_channels: 64}\noptim: {lr: 0.001}\n")
    cfg = resolve_config(load_config(path), ["optim.lr=3e-4", "model.num_layers=2", "data.train=a.lmdb",
                                             "dtype=float64"])
    assert cfg["optim"]["lr"] == 3e-4 and cfg["optim"]["amsgrad"] is True
    assert cfg["model"] == {"name": "e3relax", "hidden_channels": 64, "num_layers": 2}
    assert cfg["data"]["train"] == "a.lmdb" and cfg["dtype"] == "float64"
    save_config(cfg, tmp_path / "saved.yaml")
    assert resolve_config(load_config(tmp_path / "saved.yaml")) == cfg


def test_changing_model_name_drops_old_keys():
    cfg = resolve_config({"model": {"name": "e3relax", "hidden_channels": 64}}, ["model={name: dummy}"])
    assert cfg["model"] == {"name": "dummy"}


def test_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'optim.learning_rate'"):
        resolve_config({}, ["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match="unknown config key 'epochs'"):
        resolve_config({"epochs": 3})
    with pytest.raises(ConfigError, match="not of the form key=value"):
        resolve_config({}, ["optim.lr"])
    with pytest.raises(ConfigError, match="dtype must be float32 or float64"):
        resolve_config({"dtype": "half"})
    with pytest.raises(ConfigError, match="ema.decay"):
        resolve_config({"ema": {"decay": 1.5}})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    assert "lr" in DEFAULTS["optim"]


def test_sampler_is_a_function_of_step_and_splits_ranks():
    one = StreamBatchSampler(10, 4, seed=5)
    stream = iter(one)
    batches = [next(stream) for _ in range(6)]
    resumed = StreamBatchSampler(10, 4, seed=5)
    resumed.start_batch = 3
    it = iter(resumed)
    assert [next(it) for _ in range(3)] == batches[3:]
    flat = [i for b in batches[:5] for i in b]  # 20 draws = 2 data epochs, each a permutation
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert flat[:10] != flat[10:20]
    r0, r1 = StreamBatchSampler(10, 2, seed=5, rank=0, world_size=2), StreamBatchSampler(10, 2, seed=5, rank=1,
                                                                                         world_size=2)
    assert r0.batch(0) + r1.batch(0) == batches[0]
    assert not set(r0.batch(1)) & set(r1.batch(1))


def test_model_configs_of_the_benchmarks_load(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("model: {name: e3relax}\noptim: {lr: 2.0e-4, clip_grad_norm: 20.0, ema: 0.99, batch_size: 8}\n")
    cfg = resolve_config(load_config(path))
    assert cfg["optim"]["grad_clip"] == 20.0 and cfg["optim"]["lr"] == 2e-4
    assert cfg["ema"]["decay"] == 0.99 and cfg["data"]["batch_size"] == 8


def test_example_training_configs_resolve():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "configs").glob("train_*.yaml"))
    assert len(configs) >= 3
    for path in configs:
        cfg = resolve_config(load_config(path))
        assert cfg["model"]["name"] and cfg["data"]["train"], path
