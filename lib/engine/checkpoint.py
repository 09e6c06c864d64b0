"""Checkpoints: atomic writes, a format version, the resolved config, RNG states as tensors.

A checkpoint is one ``torch.save`` of a flat dict written by Ignite's ``Checkpoint`` handler::

    {"format_version": 1, "config": {...}, "model": state_dict, "ema_model": state_dict,
     "optimizer": ..., "scheduler": ..., "trainer": ..., "early_stopping": ..., "rng": {...}, ...}

Everything in it is a tensor or a primitive container, so it loads with
``torch.load(path, weights_only=True)``; no user object is unpickled.
"""
from __future__ import annotations

import logging
import pickle
import random
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from e3relax.errors import InputError, MissingPathError

__all__ = ["FORMAT_VERSION", "Value", "RngState", "load_checkpoint", "restore_run", "model_from_checkpoint",
           "model_weights", "AtomicSaver"]  # noqa: F822 (AtomicSaver is built on first use: see __getattr__)

log = logging.getLogger(__name__)

#: Bumped whenever the checkpoint layout changes incompatibly.
FORMAT_VERSION = 1


class Value:
    """A constant saved under its key by Ignite's ``Checkpoint`` (format version, config)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def state_dict(self) -> Any:
        return self.value

    def load_state_dict(self, state: Any) -> None:
        self.loaded = state


class RngState:
    """Captures and restores Python, NumPy, torch (and CUDA) generator states as tensors."""

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = random.getstate()
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
        out: dict[str, Any] = {
            "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                       "gauss": gauss},
            "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)),
                      "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            out["cuda"] = list(torch.cuda.get_rng_state_all())
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        py = state["python"]
        random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
        nps = state["numpy"]
        np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
                             nps["gauss"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_saver_class() -> type:
    """``AtomicSaver``, built on first use so that loading a checkpoint (prediction) never imports Ignite."""
    from ignite.handlers import DiskSaver

    class AtomicSaver(DiskSaver):
        """``DiskSaver`` that writes atomically and deletes a superseded file only after its successor
        is on disk, so a crash at any moment leaves a complete checkpoint behind.
        """

        def __init__(self, dirname: str | Path) -> None:
            super().__init__(str(dirname), atomic=True, require_empty=False, create_dir=True)
            self._pending: list[str] = []

        def remove(self, filename: str) -> None:  # deferred until the next save succeeded
            self._pending.append(filename)

        def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
            super().__call__(checkpoint, filename, metadata)
            pending, self._pending = self._pending, []
            for old in pending:
                if old != filename and (Path(self.dirname) / old).exists():
                    super().remove(old)

    return AtomicSaver


def __getattr__(name: str) -> Any:
    if name == "AtomicSaver":
        globals()[name] = cls = _atomic_saver_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _refusal(exc: Exception) -> str:
    """Why a safe load failed, in our words (torch's own message suggests an unsafe load: never repeat it)."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (f"it holds a pickled object of type {found.group(1)}, which a safe load refuses to run; "
                "only tensors and plain containers are read")
    if isinstance(exc, EOFError) or not text:
        return "the file is empty or truncated"
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text.lower():
        return "it is not a plain PyTorch checkpoint of tensors; a safe load refuses it"
    return f"not a PyTorch checkpoint: {type(exc).__name__}: {text.splitlines()[0][:200]}"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check its format version.

    Raises:
        FileNotFoundError / ValueError: naming the file and what is wrong with it.
    """
    path = Path(path)
    if path.is_dir():  # a run folder: take its last checkpoint
        path = path / "checkpoints" / "last.pt"
    if not path.exists():
        raise MissingPathError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a safe checkpoint"
        raise InputError(f"{path} is not a checkpoint written by e3relax ({_refusal(exc)})") from exc
    if not isinstance(ckpt, dict) or "format_version" not in ckpt or "config" not in ckpt:
        raise InputError(f"{path} is not an e3relax checkpoint (no format_version/config)")
    if int(ckpt["format_version"]) > FORMAT_VERSION:
        raise InputError(f"{path} has checkpoint format {ckpt['format_version']}; this version reads "
                         f"up to {FORMAT_VERSION}: upgrade e3relax")
    return ckpt


def model_weights(ckpt: Mapping[str, Any], which: str = "ema") -> dict[str, torch.Tensor]:
    """The EMA (default) or raw model state dict of a loaded checkpoint."""
    key = "ema_model" if which == "ema" else "model"
    if key not in ckpt:
        key = "model" if key == "ema_model" else "ema_model"
        log.warning("checkpoint has no %s weights; using %s", which, key)
    return ckpt[key]


def model_from_checkpoint(path: str | Path | Mapping[str, Any], weights: str = "ema",
                          device: str | torch.device = "cpu",
                          dtype: torch.dtype | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint from its saved config and load its weights.

    Args:
        path: checkpoint file, run folder, or a checkpoint already loaded with :func:`load_checkpoint`.
        weights: ``ema`` (default) or ``model``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: default: the run's dtype.

    Returns:
        (model in eval mode, resolved config of the run).
    """
    from e3relax.device import resolve_device
    from e3relax.registry import MODELS

    ckpt = path if isinstance(path, Mapping) else load_checkpoint(path)
    config = ckpt["config"]
    if dtype is None:
        dtype = torch.float64 if config.get("dtype") == "float64" else torch.float32
    model = MODELS.build(config["model"]).to(dtype=dtype)  # cast first: loading keeps the saved precision
    model.load_state_dict(model_weights(ckpt, weights))
    return model.to(device=resolve_device(device)).eval(), config


def restore_run(objects: Mapping[str, Any], run_dir: str | Path) -> None:
    """Load a run's ``last.pt`` into its ``objects`` (the mapping ``last.pt`` was saved from).
    Constants (:class:`Value`) are not restored; a checkpoint from before the non-finite tally
    (``nonfinite_steps``) restarts it at 0."""
    from ignite.handlers import Checkpoint

    ckpt = load_checkpoint(run_dir)
    state = {k: v for k, v in objects.items()
             if not isinstance(v, Value) and (k in ckpt or k != "nonfinite_steps")}
    Checkpoint.load_objects(state, ckpt)
