"""Evaluate a checkpoint on a dataset and write a per-structure CSV, a summary JSON and a markdown
table with the model and the Dummy baseline (the unrelaxed input) side by side.
"""
from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.utils.data import Dataset

from e3relax.engine.checkpoint import model_from_checkpoint
from e3relax.engine.data import build_dataset, eval_loader
from e3relax.engine.evaluator import create_evaluator
from e3relax.metrics import MAE_POS, MAE_VOL, POOLED_MAE_POS, SHAPE_DEV

__all__ = ["evaluate_model", "evaluate_checkpoint", "write_report", "UNITS"]

log = logging.getLogger(__name__)

#: units of the metrics shown in the markdown table
UNITS = {MAE_POS: "Å", POOLED_MAE_POS: "Å", SHAPE_DEV: "Å²", MAE_VOL: "Å³", "abc_mae": "Å", "angle_mae": "°",
         "a_err": "Å", "b_err": "Å", "c_err": "Å", "alpha_err": "°", "beta_err": "°", "gamma_err": "°"}
_SKIP_ROWS = ("id", "natoms", "lattice_pred", "lattice_ref", "lattice_dummy")


def evaluate_model(model: torch.nn.Module, dataset: Dataset, device: torch.device, dtype: torch.dtype,
                   batch_size: int = 16, num_workers: int = 0) -> tuple[dict[str, float], dict[str, list]]:
    """Run the evaluator engine over ``dataset``.

    Returns:
        (summary metrics incl. ``dummy/...``, per-structure rows of :class:`RelaxMetrics`).
    """
    engine = create_evaluator(model, device, dtype)
    from ignite.handlers import ProgressBar

    ProgressBar(persist=False, desc="evaluate").attach(engine)
    engine.run(eval_loader(dataset, batch_size, num_workers))
    summary = {k: float(v) for k, v in engine.state.metrics.items() if isinstance(v, (int, float))}
    return summary, engine.relax_metrics.rows


def _metric_names(rows: Mapping[str, list]) -> list[str]:
    return [k for k in rows if k not in _SKIP_ROWS and not k.startswith("dummy/")]


def write_report(summary: Mapping[str, float], rows: Mapping[str, list], out_dir: str | Path,
                 meta: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``per_structure.csv``, ``summary.json`` and ``summary.md`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = _metric_names(rows)
    paths = {"csv": out / "per_structure.csv", "json": out / "summary.json", "md": out / "summary.md"}
    with paths["csv"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "natoms", *names, *(f"dummy_{n}" for n in names)])
        for i in range(len(rows["id"])):
            writer.writerow([rows["id"][i], rows["natoms"][i], *(f"{rows[n][i]:.6g}" for n in names),
                             *(f"{rows['dummy/' + n][i]:.6g}" for n in names)])
    model = {k: v for k, v in summary.items() if not k.startswith("dummy/")}
    dummy = {k[len("dummy/"):]: v for k, v in summary.items() if k.startswith("dummy/")}
    doc = {**meta, "num_structures": len(rows["id"]), "model": model, "dummy": dummy}
    paths["json"].write_text(json.dumps(doc, indent=2, allow_nan=True), encoding="utf-8")
    lines = [f"Evaluation of `{meta.get('checkpoint', 'model')}` on `{meta.get('data', '')}` "
             f"({len(rows['id'])} structures, {meta.get('weights', 'ema')} weights); means over structures, "
             f"except `{POOLED_MAE_POS}` (pooled over all atoms).", "",
             "| metric | unit | model | Dummy |", "|---|---|---:|---:|"]
    for name in [MAE_POS, SHAPE_DEV, MAE_VOL, POOLED_MAE_POS] + [n for n in model if n not in
                                                                 (MAE_POS, SHAPE_DEV, MAE_VOL, POOLED_MAE_POS)]:
        m, d = model.get(name, math.nan), dummy.get(name, math.nan)
        lines.append(f"| {name} | {UNITS.get(name, '')} | {m:.4f} | {d:.4f} |")
    paths["md"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def evaluate_checkpoint(checkpoint: str | Path, data: Any, out_dir: str | Path, batch_size: int = 16,
                        device: str = "auto", weights: str = "ema", dtype: str | None = None,
                        num_workers: int = 0) -> dict[str, Any]:
    """Load ``checkpoint`` (safely), evaluate it on ``data`` (LMDB path or dataset) and write the report.

    Returns:
        the summary document written to ``summary.json``.
    """
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}.get(dtype or "", None)
    model, config = model_from_checkpoint(checkpoint, weights=weights, device=dev, dtype=torch_dtype)
    torch_dtype = next(model.parameters()).dtype if any(True for _ in model.parameters()) else torch.float32
    dataset = build_dataset(data, torch_dtype)
    summary, rows = evaluate_model(model, dataset, dev, torch_dtype, batch_size, num_workers)
    meta = {"checkpoint": str(checkpoint), "data": str(data) if isinstance(data, (str, Path)) else "dataset",
            "weights": weights, "model_spec": config["model"], "device": str(dev), "dtype": str(torch_dtype)}
    paths = write_report(summary, rows, out_dir, meta)
    log.info("wrote %s, %s and %s", *paths.values())
    return json.loads(paths["json"].read_text(encoding="utf-8"))
