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

import numpy as np
import torch

from e3relax.engine.data import build_dataset
from e3relax.engine.evaluation import EvalTable, evaluate
from e3relax.metrics import MAE_POS, MAE_VOL, POOLED_MAE_POS, SHAPE_DEV

__all__ = ["evaluate_checkpoint", "write_report", "UNITS"]

log = logging.getLogger(__name__)

#: units of the metrics shown in the markdown table
UNITS = {MAE_POS: "Å", POOLED_MAE_POS: "Å", SHAPE_DEV: "Å²", MAE_VOL: "Å³", "abc_mae": "Å", "angle_mae": "°",
         "a_err": "Å", "b_err": "Å", "c_err": "Å", "alpha_err": "°", "beta_err": "°", "gamma_err": "°", "uncertainty": "Å"}


def write_report(table: EvalTable, out_dir: str | Path, meta: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``per_structure.csv``, ``summary.json`` and ``summary.md`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "per_structure.csv", "json": out / "summary.json", "md": out / "summary.md"}
    cols = table.columns()
    with paths["csv"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(list(cols))
        for i in range(len(table)):
            writer.writerow([v[i] if k in ("id", "natoms") else f"{v[i]:.6g}" for k, v in cols.items()])
    summary = table.summary
    model = {k: v for k, v in summary.items() if not k.startswith("dummy/")}
    model.update({k: float(np.nanmean(v)) for k, v in table.extra.items() if len(v)})
    dummy = {k[len("dummy/"):]: v for k, v in summary.items() if k.startswith("dummy/")}
    doc = {**meta, "num_structures": len(table), "model": model, "dummy": dummy}
    paths["json"].write_text(json.dumps(doc, indent=2, allow_nan=True), encoding="utf-8")
    lines = [f"Evaluation of `{meta.get('checkpoint', 'model')}` on `{meta.get('data', '')}` "
             f"({len(table)} structures, {meta.get('weights', 'ema')} weights); means over structures, "
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
                        num_workers: int = 0, skip_bad_records: bool = False, symmetry: bool = True,
                        canonical: bool | None = None, symprec: float = 0.01) -> dict[str, Any]:
    """Load ``checkpoint`` (safely; a file, run folder, pretrained name or ensemble), evaluate it on
    ``data`` (LMDB path or dataset) and write the report.

    The data is opened first, so a wrong path or a bad database fails before any model loads.
    With ``skip_bad_records`` records that fail validation are left out and counted
    (``skipped_records`` in the summary); otherwise the first one stops the evaluation.
    ``symmetry``, ``canonical`` and ``symprec`` are those of :class:`~e3relax.predict.Relaxer`.

    Returns:
        the summary document written to ``summary.json``.

    Raises:
        InputError: when the data holds no structures.
    """
    from e3relax.engine.data import skipped_records
    from e3relax.errors import InputError
    from e3relax.predict import Relaxer

    dataset = build_dataset(data, torch.float64, skip_bad=skip_bad_records, what="--data")
    if len(dataset) == 0:
        raise InputError(f"--data {data} holds no structures")
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}.get(dtype or "", None)
    relaxer = Relaxer.from_checkpoint(checkpoint, device=device, dtype=torch_dtype, weights=weights,
                                      symmetry=symmetry, canonical=canonical, symprec=symprec)
    table = evaluate(relaxer, dataset, batch_size=batch_size, num_workers=num_workers)
    meta = {"checkpoint": str(checkpoint), "data": str(data) if isinstance(data, (str, Path)) else "dataset",
            "members": relaxer.names, "weights": weights, "device": str(relaxer.device),
            "dtype": str(relaxer.dtype), "skipped_records": skipped_records(dataset),
            "symmetry": symmetry, "canonical_cell": relaxer.frames.canonical, "symprec": symprec}
    paths = write_report(table, out_dir, meta)
    log.info("wrote %s, %s and %s", *paths.values())
    return json.loads(paths["json"].read_text(encoding="utf-8"))
