"""Trainings under one CPU-time budget, run side by side, and their validation curves.

Used by ``benchmarks/time_to_accuracy.py`` and ``benchmarks/cpu_recipes.py``: each run is an
``e3relax train`` process (one thread) with ``schedule.time_limit_s`` on the CPU clock, started
or resumed in ``out/<name>``; its validation history (metrics and CPU-seconds at every evaluation)
is read back from its last checkpoint.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["METRICS", "add_run_arguments", "launch", "run_all", "records", "reference_lines", "plot_curves", "time_to_reach"]

#: validation metrics drawn, with their axis labels
METRICS = (("mae_pos", "coordinates (Å)"), ("shape_dev", "shape (Å²)"), ("mae_vol", "volume (Å³)"))


def _value(v: Any) -> str:
    return json.dumps(v) if v is None or isinstance(v, (bool, list, dict)) else str(v)


def add_run_arguments(p: Any, cpu_minutes: float, val_structures: int, every: int, out: str) -> None:
    """The options every timed-runs script shares, with its defaults, on an argparse parser."""
    p.add_argument("--data", required=True, help="converted folder (train.lmdb, val.lmdb)")
    p.add_argument("--cpu-minutes", type=float, default=cpu_minutes, help=f"CPU budget per run; default {cpu_minutes:g}")
    p.add_argument("--val-structures", type=int, default=val_structures)
    p.add_argument("--every", type=int, default=every, help=f"steps between validations; default {every}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, one core each; default 2")
    p.add_argument("--out", default=out)
    p.add_argument("--render", action="store_true", help="only redraw from the runs' checkpoints")


def launch(name: str, config: str | Path, overrides: Mapping[str, Any], out: Path) -> subprocess.Popen | None:
    """Start (or resume) ``e3relax train`` for run ``name`` in ``out/name``; None when it already finished."""
    run_dir, done = out / name, out / f"{name}.summary.json"
    if done.exists():
        return None
    cmd = [sys.executable, "-m", "e3relax.cli.main", "train", "--config", str(config)]
    cmd += ["--resume", str(run_dir)] if (run_dir / "checkpoints" / "last.pt").exists() else ["--run-dir", str(run_dir)]
    cmd += [f"{k}={_value(v)}" for k, v in overrides.items()]
    print(f"{name}: {' '.join(cmd)}", flush=True)
    with open(out / f"{name}.log", "a", encoding="utf-8") as log, open(done.with_suffix(".partial"), "w") as so:
        return subprocess.Popen(cmd, stdout=so, stderr=log, env=dict(os.environ, OMP_NUM_THREADS="1"))


def run_all(runs: Mapping[str, tuple[str | Path, Mapping[str, Any]]], out: Path, jobs: int = 2) -> list[str]:
    """Run every ``name -> (config, overrides)``, ``jobs`` at a time; returns the names that failed
    (run the same command again to continue them)."""
    out.mkdir(parents=True, exist_ok=True)
    pending, active, failed = list(runs), {}, []
    while pending or active:
        while pending and len(active) < jobs:
            name = pending.pop(0)
            proc = launch(name, *runs[name], out)
            if proc is not None:
                active[name] = proc
        for name, proc in list(active.items()):
            if proc.poll() is None:
                continue
            del active[name]
            if proc.returncode == 0:
                (out / f"{name}.summary.partial").rename(out / f"{name}.summary.json")
                print(f"{name}: finished", flush=True)
            else:
                failed.append(name)
                print(f"{name}: stopped with status {proc.returncode}; see {out / (name + '.log')}", flush=True)
        if active:
            time.sleep(2.0)
    return failed


def records(run_dir: Path) -> list[dict[str, float]]:
    """Every validation of a run (``iteration``, ``cpu_s``, metrics), from its last checkpoint."""
    from e3relax.engine.checkpoint import load_checkpoint

    cols = load_checkpoint(run_dir)["val_history"]["columns"]
    return [{k: float(v[i]) for k, v in cols.items()} for i in range(len(cols.get("iteration", [])))]


def time_to_reach(recs: Sequence[Mapping[str, float]], target: float, metric: str = "mae_pos") -> float | None:
    """CPU-seconds of the first validation at or below ``target``."""
    return next((r["cpu_s"] for r in recs if r[metric] <= target), None)


def reference_lines(data: str | Path, val_structures: int | None, split: str = "val") -> dict[str, dict[str, float]]:
    """Validation (or ``split``) metrics of the Dummy and, when registered, the atomic-volume prior
    (fitted on the training split) on the same subset as the runs."""
    import torch

    from e3relax.engine.data import build_dataset
    from e3relax.engine.evaluation import evaluate
    from e3relax.registry import MODELS

    val = build_dataset(f"{data}/{split}.lmdb", torch.float64)
    rows = {"Dummy": evaluate(MODELS.build({"name": "dummy"}), val, max_structures=val_structures, progress=None)}
    if "volume_prior" in MODELS.names():
        from e3relax.priors import fit_priors

        prior = MODELS.build({"name": "volume_prior"})
        fit_priors(prior, build_dataset(f"{data}/train.lmdb", torch.float64))
        rows["atomic-volume prior"] = evaluate(prior, val, max_structures=val_structures, progress=None)
    return {k: {m: float(t.summary[m]) for m, _ in METRICS} for k, t in rows.items()}


def plot_curves(curves: Mapping[str, Sequence[Mapping[str, float]]], lines: Mapping[str, Mapping[str, float]],
                path: Path, title: str = "") -> Path:
    """Validation coordinate, shape and volume error against CPU minutes, one line per run, with the
    reference lines dashed; the y axis follows the runs and lines (log scale when they span a decade)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
    styles = {"Dummy": ("0.4", "--"), "atomic-volume prior": ("tab:green", ":")}
    palette = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")
    for ax, (metric, label) in zip(axes, METRICS):
        values = []
        for k, (name, recs) in enumerate(curves.items()):
            ys = [r[metric] for r in recs]
            values += ys
            ax.plot([r["cpu_s"] / 60 for r in recs], ys, marker="os^D"[k // 10 % 4], ms=3, label=name,
                    color=palette(k % palette.N), ls="-" if k < 10 else "--")
        for name, vals in lines.items():
            color, ls = styles.get(name, ("k", "-."))
            ax.axhline(vals[metric], color=color, ls=ls, lw=1, label=name)
            values.append(vals[metric])
        if values and min(values) > 0 and max(values) / min(values) > 10:
            ax.set_yscale("log")
        ax.set_xlim(left=0)
        ax.set_xlabel("CPU minutes of the training process")
        ax.set_ylabel(f"validation {label}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
