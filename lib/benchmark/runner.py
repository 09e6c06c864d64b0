"""Train one model under the shared budget, then test it: metrics, matching, timing, parameters."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from e3relax.benchmark.budget import Budget
from e3relax.benchmark.predict import Predictions, count_parameters, predict, subset, time_inference
from e3relax.benchmark.suite import ModelRun
from e3relax.engine.config import merge, resolve_config

__all__ = ["engine_config", "train_model", "test_model", "match_summary", "convergence"]

log = logging.getLogger(__name__)


def engine_config(run: ModelRun, seed: int, splits: Mapping[str, Path], budget: Budget, run_dir: Path,
                  device: str, dtype: str = "float32", progress_bar: bool = False) -> dict[str, Any]:
    """The resolved engine config of one (model, seed): the model's own config + the shared budget."""
    user = merge(run.config, budget.engine_config(), strict=False)
    user = merge(user, {
        "run_dir": str(run_dir), "seed": int(seed), "device": device, "dtype": dtype,
        "data": {"train": str(splits["train"]), "val": str(splits["val"]), "num_workers": 0},
        "log": {"progress_bar": progress_bar, "figures": False, "tensorboard": True},
    }, strict=False)
    return resolve_config(user)


def convergence(history: list[tuple[int, float]], tolerance: float = 0.01) -> dict[str, Any]:
    """Did validation stop improving within the budget?

    ``converged`` (a plateau, not a proof of convergence) is True when the second half of the
    evaluations improved the best validation coordinate MAE of the first half by at most
    ``tolerance`` (relative); it is False with fewer than four evaluations (too few to tell).
    Judging by the best value of each half, not by the last evaluation, keeps one noisy
    validation at the end from passing for a plateau.
    """
    if not history:
        return {"converged": False, "best_step": None, "best_val": math.nan, "evaluations": 0}
    vals = [v for _, v in history]
    best = int(np.nanargmin(vals))
    half = len(vals) // 2
    plateau = len(vals) >= 4 and np.nanmin(vals[half:]) >= (1 - tolerance) * np.nanmin(vals[:half])
    return {"converged": bool(plateau), "best_step": history[best][0], "best_val": vals[best],
            "evaluations": len(vals)}


def train_model(run: ModelRun, seed: int, splits: Mapping[str, Path], budget: Budget, run_dir: Path,
                device: str, dtype: str = "float32", progress_bar: bool = False,
                resume: bool = False) -> tuple[torch.nn.Module, dict]:
    """Train ``run`` with ``seed`` under ``budget`` (``resume``: continue ``run_dir`` from its last
    checkpoint); return the best-validation EMA model and a record."""
    from e3relax.engine.checkpoint import model_from_checkpoint
    from e3relax.engine.trainer import train

    config = engine_config(run, seed, splits, budget, run_dir, device, dtype, progress_bar)
    t0 = time.perf_counter()
    summary = train(config, resume=resume) or {}
    seconds = time.perf_counter() - t0
    history = [tuple(h) for h in summary.get("val_history", [])]
    best = run_dir / "checkpoints" / "best.pt"
    ckpt = best if best.exists() else run_dir / "checkpoints" / "last.pt"
    model, _ = model_from_checkpoint(ckpt, weights="ema", device=device)
    # wall seconds of the whole run, across resumes, where the budget kept them; else this process's
    whole = summary.get("wall_used_s")
    record = {"train_seconds": whole if whole is not None else seconds,
              "train_seconds_partial": bool(resume and whole is None),
              "steps": int(summary.get("iteration") or 0),
              "wall_budget_hit": bool(summary.get("time_limit_hit")), "checkpoint": ckpt.name,
              "time_used_s": summary.get("time_used_s"), "time_clock": config["schedule"]["time_clock"],
              "resumed": bool(resume),
              "val_history": [list(h) for h in history],
              "structures_per_s": summary.get("structures_per_s"),
              "skipped_nonfinite_steps": int(summary.get("skipped_nonfinite_steps") or 0),
              "rewinds": list(summary.get("rewinds") or []), "stopped_nonfinite": summary.get("stopped_nonfinite"),
              **convergence(history)}
    record["converged"] = record["converged"] and not record["stopped_nonfinite"]  # a diverged run did not plateau
    return model, record


def match_summary(preds: Predictions, limit: int | None) -> tuple[dict[str, float], int]:
    """StructureMatcher match rates (strict, loose) and space-group agreement on the first ``limit``,
    with the number of pairs that ran out of time, failed, or had a degenerate predicted cell."""
    from e3relax.metrics import match_metrics

    n = len(preds.structures) if limit is None else min(limit, len(preds.structures))
    if n == 0:
        return {}, 0
    m = match_metrics(preds.structures[:n], preds.references[:n], ids=preds.ids[:n] if preds.ids else None)
    return {"match_strict": float(np.mean(m["match_strict"])), "match_loose": float(np.mean(m["match_loose"])),
            "spg_match": float(np.mean(m["spg_match"])), "match_timeouts": int(m["match_timeout"].sum()),
            "match_errors": int(m["match_error"].sum()), "degenerate_cells": int(m["degenerate"].sum())}, n


def test_model(model: torch.nn.Module, test_ds: Any, device: torch.device, batch_size: int,
               match_limit: int | None, timing_structures: int = 32,
               frames: Any = None) -> tuple[Predictions, dict[str, Any]]:
    """Predict the test set (through :func:`~e3relax.benchmark.predict.predict` with ``frames``);
    summarise metrics, matching, timing and size."""
    preds = predict(model, test_ds, device, torch.float32, batch_size, frames)
    summary = {k: float(np.nanmean(v)) for k, v in preds.metrics.items()}
    match, n_match = match_summary(preds, match_limit)
    timing = time_inference(model, subset(test_ds, timing_structures), device, torch.float32,
                            timing_structures, batch_size)
    # the Relaxer returns the input where the model's output was not finite: scored as such, and counted
    non_finite = int(np.sum(preds.extra["non_finite"])) if "non_finite" in preds.extra else 0
    return preds, {"metrics": summary, "match": match, "match_structures": n_match, "timing": timing,
                   "parameters": count_parameters(model), "test_structures": len(preds.ids),
                   "non_finite_predictions": non_finite}
