"""TensorBoard logging (rank 0): training scalars through Ignite's ``TensorboardLogger``, validation
metrics with the Dummy reference, figures at each evaluation, and the run's hyperparameters.

Tags written:
    train/loss, train/<term> (per-layer loss terms such as train/pos/0, train/cell/0), train/grad_norm,
    train/lr/group_0, train/throughput (structures/s), train/data_wait_share, train/ema_momentum;
    val/<metric> and val/dummy/<metric> (mae_pos, pooled_mae_pos, shape_dev, mae_vol, lattice errors);
    figures val/coord_error_distribution and val/lattice_parity; the hparams panel.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import torch
from ignite.engine import Engine, Events
from ignite.handlers.tensorboard_logger import OptimizerParamsHandler, OutputHandler, TensorboardLogger

from e3relax.engine.evaluator import COORD
from e3relax.metrics import PAPER_METRICS, POOLED_MAE_POS

__all__ = ["setup_tensorboard", "error_distribution_figure", "lattice_parity_figure", "flatten_hparams"]

log = logging.getLogger(__name__)

_LATTICE_LABELS = ("a (Å)", "b (Å)", "c (Å)", "α (°)", "β (°)", "γ (°)")


def error_distribution_figure(model_err: list[float], dummy_err: list[float]):
    """Histogram of per-structure coordinate MAE, model against Dummy (log-spaced bins)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5, 3.5))
    values = np.asarray([v for v in list(model_err) + list(dummy_err) if v > 0 and math.isfinite(v)])
    lo, hi = (values.min(), values.max()) if values.size else (1e-3, 1.0)
    bins = np.logspace(np.log10(lo * 0.9), np.log10(hi * 1.1 + 1e-12), 30)
    ax.hist(dummy_err, bins=bins, alpha=0.5, label=f"Dummy (mean {np.mean(dummy_err):.3f})", color="grey")
    ax.hist(model_err, bins=bins, alpha=0.7, label=f"model (mean {np.mean(model_err):.3f})", color="tab:blue")
    ax.set_xscale("log")
    ax.set_xlabel("coordinate MAE per structure (Å)")
    ax.set_ylabel("structures")
    ax.legend()
    fig.tight_layout()
    return fig


def lattice_parity_figure(pred: list[list[float]], ref: list[list[float]], dummy: list[list[float]]):
    """Predicted (and Dummy) against relaxed lattice parameters, one panel per a, b, c, α, β, γ."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    pred, ref, dummy = (np.asarray(x, dtype=float).reshape(-1, 6) for x in (pred, ref, dummy))
    fig, axes = plt.subplots(2, 3, figsize=(10, 6.5))
    for k, ax in enumerate(axes.ravel()):
        ax.scatter(ref[:, k], dummy[:, k], s=6, color="grey", alpha=0.5, label="Dummy")
        ax.scatter(ref[:, k], pred[:, k], s=6, color="tab:blue", alpha=0.8, label="model")
        both = np.concatenate([ref[:, k], pred[:, k], dummy[:, k]])
        lo, hi = float(np.nanmin(both)), float(np.nanmax(both))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(_LATTICE_LABELS[k])
        ax.set_xlabel("relaxed")
        ax.set_ylabel("predicted")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def flatten_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested config into ``a.b.c -> int | float | str | bool`` for the hparams panel."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_hparams(value, name + "."))
        elif isinstance(value, bool) or isinstance(value, (int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def _write_hparams(writer: Any, config: Mapping[str, Any]) -> None:
    from torch.utils.tensorboard.summary import hparams

    metric_tags = {f"val/{name}": 0.0 for name in (*PAPER_METRICS, POOLED_MAE_POS)}
    exp, ssi, sei = hparams(flatten_hparams(config), metric_tags)
    for summary in (exp, ssi, sei):
        writer.file_writer.add_summary(summary)


def _scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) or
            (torch.is_tensor(v) and v.numel() == 1)}


def setup_tensorboard(log_dir: Path, trainer: Engine, evaluator: Engine, optimizer: torch.optim.Optimizer,
                      config: Mapping[str, Any]) -> TensorboardLogger:
    """Attach TensorBoard logging to the trainer and evaluator (call on rank 0 only)."""
    every = int(config["log"]["every"])
    tb = TensorboardLogger(log_dir=str(log_dir))
    train_event = Events.ITERATION_COMPLETED(every=every)
    tb.attach(trainer, log_handler=OutputHandler(
        tag="train", output_transform=lambda out: {k: v for k, v in out.items() if k != "num_structures"},
        state_attributes=["throughput", "data_wait_share", "ema_momentum"]), event_name=train_event)
    tb.attach(trainer, log_handler=OptimizerParamsHandler(optimizer, param_name="lr", tag="train"),
              event_name=train_event)
    writer = tb.writer
    figures = bool(config["log"]["figures"])

    @evaluator.on(Events.COMPLETED)
    def _log_validation(engine: Engine) -> None:
        step = trainer.state.iteration
        for name, value in _scalar_metrics(engine.state.metrics).items():
            writer.add_scalar(f"val/{name}", value, step)
        rows = engine.relax_metrics.rows
        if figures and rows.get(COORD):
            fig = error_distribution_figure(rows[COORD], rows["dummy/" + COORD])
            writer.add_figure("val/coord_error_distribution", fig, step, close=True)
            fig = lattice_parity_figure(rows["lattice_pred"], rows["lattice_ref"], rows["lattice_dummy"])
            writer.add_figure("val/lattice_parity", fig, step, close=True)
        writer.flush()

    _write_hparams(writer, config)
    return tb
