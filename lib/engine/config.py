"""Training configuration: defaults, YAML loading, ``key=value`` dotted overrides, validation.

A run is described by one nested dict of primitives (str, int, float, bool, None, lists, dicts),
so it can be saved as YAML in the run folder and inside every checkpoint (loadable with
``torch.load(..., weights_only=True)``). :data:`DEFAULTS` follows the reference training script
where it is sound (AdamW with amsgrad, lr 1e-4, clip 150, EMA 0.999, plateau decay 0.8 after 5
evaluations, early stopping after 15, one evaluation every ``epoch_length`` steps).
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Mapping

import yaml

from e3relax.engine.config_types import check_spec_types, check_types
from e3relax.errors import InputError

__all__ = ["DEFAULTS", "ConfigError", "load_config", "merge", "apply_overrides", "parse_value",
           "resolve_config", "save_config"]

log = logging.getLogger(__name__)

#: Every key a run understands, with its default. Unknown keys are rejected (typos fail loudly);
#: the ``model`` and ``loss`` mappings are free-form specs checked by their registries.
DEFAULTS: dict[str, Any] = {
    "seed": 0,                     # seeds model init, data order and every RNG
    "run_dir": "runs/run",         # output folder: config.yaml, checkpoints/, tb/
    "device": "auto",              # auto (cuda when available) | cpu | cuda | cuda:1
    "dtype": "float32",            # float32 | float64
    "amp": None,                   # None | bf16 | fp16 (mixed precision, GPU only)
    "init_from": None,             # checkpoint whose weights start the run (fine-tuning)
    "init_weights": "ema",         # ema | model: which weights init_from takes
    "hooks": [],                   # dotted paths of callables hook(trainer, evaluator, context)
    "compile_kernels": "auto",     # true | false | auto: torch.compile the edge kernels (auto: runs of 2,000+ steps)
    "flush_denormal": True,        # flush denormal floats to zero on CPU (tiny radial-basis values made matmuls ~2x slower)
    "model": {"name": "e3relax"},
    "loss": {"name": "layerwise"},
    "data": {
        "train": None,             # LMDB path, list of paths, or {"name": dotted.Class, ...}
        "val": None,
        "batch_size": 32,          # global batch (split across processes)
        "val_batch_size": None,    # default: batch_size
        "num_workers": 0,
        "max_val_structures": None,  # evaluate on the first K validation structures only
        "skip_bad_records": False,  # skip (and count) records that fail validation instead of stopping
        # share of training draws whose input is generated from the pair (e3relax.engine.augment): the
        # relaxed structure strained and rattled (denoise), or a point between input and label (interpolate)
        "augment": {"share": 0.0, "kind": "denoise", "strain": 0.05, "rattle": 0.1},
    },
    "optim": {
        "lr": 1.0e-4,
        "weight_decay": 0.0,
        "amsgrad": True,
        "betas": [0.9, 0.999],
        "grad_clip": 150.0,        # max global gradient norm; None disables clipping
        "max_nonfinite_steps": 10,  # steps with a NaN/inf loss or gradient are skipped; more in a row stop the run
        "nonfinite_rewinds": 2,    # ...unless this many times it goes back to last.pt at rewind_lr_factor x lr
        "rewind_lr_factor": 0.5,
    },
    "schedule": {
        "epoch_length": 800,       # optimiser steps between evaluations ("epoch" of the reference)
        "max_epochs": 800,
        "plateau_factor": 0.8,
        "plateau_patience": 5,
        "min_lr": 1.0e-8,
        "early_stop_patience": 15,  # evaluations without improvement; None disables
        "lr_schedule": "plateau",  # plateau: ReduceLROnPlateau on validation | cosine: cosine decay over the run
        "warmup_steps": 0,         # linear learning-rate warmup over the first N steps (either schedule)
        "time_limit_s": None,      # stop (after validating) once the run has used this much time; None: no limit
        "time_clock": "cpu",       # cpu: CPU seconds of the training process | wall: wall-clock seconds
    },
    "symmetry": {
        "train": False,            # project every emitted layer onto the input's space group before the loss and at validation
        "symprec": 0.01,           # spglib tolerance (A) of that projection
    },
    "ema": {
        "decay": 0.999,            # shadow = decay * shadow + (1 - decay) * weights
        "warmup": True,            # momentum_t = max(1 - decay, (o - 1) / (o + t)): early EMA tracks the weights
        "warmup_offset": 10.0,
    },
    "checkpoint": {
        "every_steps": None,       # also save last.pt every N iterations (always: after each evaluation)
        "every_minutes": 10.0,     # and after the step that ends each such wall-clock interval; None: off
    },
    "log": {
        "tensorboard": True,
        "every": 10,               # iterations between scalar logs
        "figures": True,           # error-distribution and lattice parity figures at each evaluation
        "progress_bar": True,
    },
    "distributed": {
        "backend": None,           # None: nccl with CUDA else gloo (only when nproc_per_node > 1)
        "nproc_per_node": 1,
        "master_port": None,
    },
}

_FREE_FORM = ("model", "loss")

#: keys written by the model configs of benchmarks/configs (reference-script names) -> run keys
ALIASES = {"optim.clip_grad_norm": "optim.grad_clip", "optim.ema": "ema.decay",
           "optim.batch_size": "data.batch_size", "checkpoint.every": "checkpoint.every_steps"}


class ConfigError(InputError):
    """A configuration file, key or value is invalid; the message names it (``key``: the dotted key)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def parse_value(text: str) -> Any:
    """Parse the value of a ``key=value`` override with YAML rules (``1e-4`` is a float).

    ``null``/``none`` -> None, ``true`` -> True, ``[1, 2]`` -> list, anything else unparsable -> str.
    """
    if text.strip().lower() in ("none", "null", "~"):
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" as a string
            return float(value) if any(c.isdigit() for c in value) else value
        except ValueError:
            return value
    return value


def merge(base: Mapping[str, Any], update: Mapping[str, Any], *, strict: bool = True,
          _prefix: str = "") -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base``.

    Args:
        base: defaults (or an earlier config).
        update: user values; nested dicts merge, everything else replaces.
        strict: reject keys absent from ``base`` (except inside the free-form model/loss specs).

    Raises:
        ConfigError: naming the dotted key that is unknown.
    """
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        dotted = f"{_prefix}{key}"
        free = bool(_prefix) and _prefix.split(".")[0] in _FREE_FORM
        if strict and key not in out and not free:
            raise ConfigError(f"unknown config key '{dotted}'; known keys here: {', '.join(sorted(out))}", dotted)
        if key in _FREE_FORM and not _prefix and isinstance(value, Mapping):
            old = out.get(key) or {}
            # a different model/loss name starts from an empty spec
            out[key] = copy.deepcopy(dict(value)) if value.get("name", old.get("name")) != old.get("name") \
                else merge(old, value, strict=False, _prefix=f"{dotted}.")
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value, strict=strict, _prefix=f"{dotted}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(config: Mapping[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed by :func:`parse_value`).

    Raises:
        ConfigError: for a malformed override or an unknown key.
    """
    out = copy.deepcopy(dict(config))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. optim.lr=3e-4)")
        key, _, text = item.partition("=")
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override '{item}': empty key component")
        nested: Any = parse_value(text)
        dotted = ".".join(parts)
        if dotted in ALIASES:
            parts = ALIASES[dotted].split(".")
        for part in reversed(parts):
            nested = {part: nested}
        out = merge(out, nested, strict=True)
    return out


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file (a mapping at top level)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"config file {path} is a folder, not a YAML file") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not a text file ({exc.reason} at byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{at}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _check(config: dict[str, Any]) -> None:
    check_types(config, DEFAULTS, skip=_FREE_FORM, error=ConfigError)
    if config["dtype"] not in ("float32", "float64"):
        raise ConfigError(f"dtype must be float32 or float64, got {config['dtype']!r}")
    if config["amp"] not in (None, False, "bf16", "fp16"):
        raise ConfigError(f"amp must be null, bf16 or fp16, got {config['amp']!r}")
    if config["init_weights"] not in ("ema", "model"):
        raise ConfigError(f"init_weights must be ema or model, got {config['init_weights']!r}")
    if not 0.0 < float(config["ema"]["decay"]) < 1.0:
        raise ConfigError(f"ema.decay must lie in (0, 1), got {config['ema']['decay']!r}")
    for key in ("epoch_length", "max_epochs"):
        if int(config["schedule"][key]) < 1:
            raise ConfigError(f"schedule.{key} must be a positive integer, got {config['schedule'][key]!r}")
    if int(config["data"]["batch_size"]) < 1:
        raise ConfigError(f"data.batch_size must be positive, got {config['data']['batch_size']!r}")
    for name in _FREE_FORM:
        if not isinstance(config[name], Mapping) or "name" not in config[name]:
            raise ConfigError(f"'{name}' must be a mapping with a 'name' key, got {config[name]!r}", name)
        check_spec_types(name, config[name], error=ConfigError)


def _apply_aliases(user: Mapping[str, Any]) -> dict[str, Any]:
    """Move reference-script key names (:data:`ALIASES`) to their run keys."""
    out = copy.deepcopy(dict(user))
    for old, new in ALIASES.items():
        section, key = old.split(".")
        if isinstance(out.get(section), Mapping) and key in out[section]:
            value = out[section].pop(key)
            new_section, new_key = new.split(".")
            out.setdefault(new_section, {})
            if new_key not in out[new_section]:
                out[new_section][new_key] = value
    return out


def resolve_config(user: Mapping[str, Any] | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Defaults <- user mapping (aliases renamed) <- overrides, validated. The result is what a run saves."""
    config = merge(DEFAULTS, _apply_aliases(user or {}), strict=True)
    config = apply_overrides(config, overrides)
    _check(config)
    return config


def save_config(config: Mapping[str, Any], path: str | Path) -> None:
    """Write the resolved config as YAML (atomically: a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    tmp.replace(path)
