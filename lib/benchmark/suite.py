"""Which models a comparison trains, and with which configs.

Every registered model except ``dummy`` (the Dummy row needs no training) is one entry; its config
is ``<config_dir>/<name>_<size>.yaml``, else the training config ``train_<name>_<size>.yaml``
(``size`` "cpu": the CPU-sized configs, E3Relax's being its default CPU training recipe; "" : the
paper-sized ones). A config's model, loss, optimiser, EMA and learning-rate shape (schedule kind,
warmup, floor, plateau settings) are kept; its budget, data and run keys give way to the comparison's. The E3Relax ablations (paper Table 3) are the ``e3relax_no_*.yaml`` configs of the same
folder, re-sized to the chosen E3Relax config: an ablation keeps only the model keys in which it
differs from ``e3relax.yaml``, on top of the chosen E3Relax model spec.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from e3relax.engine.config import load_config

__all__ = ["ModelRun", "DISPLAY_NAMES", "REFERENCE_MODEL", "SAME_ARCHITECTURE", "model_runs", "ablation_runs",
           "display_name", "config_path"]

log = logging.getLogger(__name__)

#: row labels as printed in the paper's tables
DISPLAY_NAMES = {"e3relax": "E3Relax", "painn": "PaiNN", "deeprelax": "DeepRelax", "egnn": "EGNN",
                 "hegnn": "HEGNN", "gotennet": "GotenNet", "equiformer_v2": "EquiformerV2",
                 "relax_net": "RelaxNet (E3Relax block stack)", "dummy": "Dummy",
                 "e3relax_no_lattice_nodes": "E3Relax w/o lattice nodes",
                 "e3relax_no_refinement": "E3Relax w/o refinement",
                 "e3relax_no_self_image": "E3Relax w/o self-connecting edges"}
#: the model the improvement row is computed for
REFERENCE_MODEL = "e3relax"
#: models that are E3Relax itself under another name: never the "second best" baseline
SAME_ARCHITECTURE = ("relax_net",)
#: models with no trainable parameters: their rows are computed, never trained
_EXCLUDED = ("dummy", "volume_prior")


@dataclass
class ModelRun:
    """One model (or ablation) of a comparison.

    Attributes:
        key: file-system-safe id (``painn``, ``e3relax_no_refinement``).
        label: row label in the tables.
        config: engine config mapping (model, loss, optim, ...; no data, run_dir or seed).
        config_file: where the config came from ("" when built-in defaults were used).
        ablation: True for a Table 3 variant.
    """

    key: str
    label: str
    config: dict[str, Any]
    config_file: str = ""
    ablation: bool = False
    notes: list[str] = field(default_factory=list)


def display_name(key: str) -> str:
    if key in DISPLAY_NAMES:
        return DISPLAY_NAMES[key]
    if key.startswith(REFERENCE_MODEL + "_no_"):
        return "E3Relax w/o " + key[len(REFERENCE_MODEL) + 4:].replace("_", " ")
    return key


def config_path(config_dir: str | Path, name: str, size: str = "cpu") -> Path | None:
    """The config file of model ``name`` at ``size`` (see the module docstring), or None."""
    config_dir = Path(config_dir)
    for candidate in ([f"{name}_{size}.yaml", f"train_{name}_{size}.yaml"] if size else []) + [f"{name}.yaml"]:
        if (config_dir / candidate).is_file():
            return config_dir / candidate
    return None


#: schedule keys that shape the learning rate (kept from a model's config; the rest is the budget's)
LR_SHAPE_KEYS = ("lr_schedule", "warmup_steps", "min_lr", "plateau_factor", "plateau_patience")


def _clean(config: Mapping[str, Any]) -> dict[str, Any]:
    """Drop run-specific keys (data paths, run folder, seed, device, budget) a model config may carry."""
    out = copy.deepcopy(dict(config))
    for key in ("run_dir", "seed", "device", "data", "log", "hooks", "init_from"):
        out.pop(key, None)
    schedule = {k: v for k, v in (out.pop("schedule", None) or {}).items() if k in LR_SHAPE_KEYS}
    if schedule:
        out["schedule"] = schedule
    optim = out.get("optim")
    if isinstance(optim, dict):
        optim.pop("batch_size", None)  # the batch size is part of the shared budget
    return out


def model_runs(names: Sequence[str] | None, config_dir: str | Path, size: str = "cpu") -> list[ModelRun]:
    """Entries for ``names`` (None: every registered model but ``dummy``), in registry order.

    Raises:
        ValueError: naming an unknown model.
    """
    from e3relax.registry import MODELS

    registered = [n for n in MODELS.names() if n not in _EXCLUDED]
    names = list(registered if not names else names)
    unknown = [n for n in names if n not in MODELS or n in _EXCLUDED]
    if unknown:
        raise ValueError(f"unknown or untrainable model(s) {', '.join(unknown)}; choose from {', '.join(registered)}")
    config_dir = Path(config_dir)
    runs = []
    for name in names:
        path = config_path(config_dir, name, size)
        if path is None:
            log.warning("no config for model '%s' in %s; using its constructor defaults", name, config_dir)
            cfg: dict[str, Any] = {"model": {"name": name}}
        else:
            cfg = _clean(load_config(path))
            if cfg.get("model", {}).get("name") != name:
                raise ValueError(f"{path}: model.name is {cfg.get('model', {}).get('name')!r}, expected '{name}'")
        runs.append(ModelRun(name, display_name(name), cfg, str(path or "")))
    return runs


def _model_diff(variant: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in variant.items() if k not in base or base[k] != v}


def ablation_runs(config_dir: str | Path, size: str = "cpu") -> list[ModelRun]:
    """The ``e3relax_no_*.yaml`` ablations, re-sized onto the chosen E3Relax config."""
    config_dir = Path(config_dir)
    ref_path = config_dir / f"{REFERENCE_MODEL}.yaml"
    base_path = config_path(config_dir, REFERENCE_MODEL, size)
    if base_path is None or not ref_path.is_file():
        raise ValueError(f"ablations need {REFERENCE_MODEL}.yaml (and its '{size}' variant) in {config_dir}")
    reference = load_config(ref_path)["model"]
    base = _clean(load_config(base_path))
    runs = []
    for path in sorted(config_dir.glob(f"{REFERENCE_MODEL}_no_*.yaml")):
        variant = load_config(path)
        cfg = copy.deepcopy(base)
        cfg["model"].update(_model_diff(variant["model"], reference))
        if "loss" in variant:
            cfg["loss"] = copy.deepcopy(variant["loss"])
        key = path.stem
        runs.append(ModelRun(key, display_name(key), cfg, str(path), ablation=True))
    if not runs:
        raise ValueError(f"no ablation configs {REFERENCE_MODEL}_no_*.yaml in {config_dir}")
    return runs
