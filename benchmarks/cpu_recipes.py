"""Choose the CPU training recipe by measurement: validation error against CPU-seconds per recipe.

Every recipe trains E3Relax from ``benchmarks/configs/train_e3relax_cpu.yaml`` (F = 128, 4 layers,
64 radial functions) with the keys that define the recipe set explicitly, for the same budget of CPU-seconds of its own process (``schedule.time_limit_s`` on the
CPU clock), one thread each, ``--jobs`` at a time, on the same data and the same fixed validation
subset. The recipes vary one setting at a time around a centre: learning rate with warmup and
decay, batch size, EMA decay and its warmup, width and depth, and the atomic-volume prior; and the
previous CPU config. The chosen recipe (``lr_1e-3``) is now the CPU config itself.

Writes ``recipes.md`` (final and best validation errors per recipe), ``recipes.json`` and
``recipes.png`` (validation curves) into ``--out``. Run the same command again to continue
stopped runs; finished ones are not repeated. Choose on validation data only.

Usage::

    python benchmarks/cpu_recipes.py --data data/pnictides --cpu-minutes 6 --out results/recipes_pnictides
    python benchmarks/cpu_recipes.py --data data/srnbh --cpu-minutes 6 --recipes centre centre_no_prior \\
        --out results/recipes_srnbh
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from e3relax.benchmark.timed_runs import add_run_arguments, METRICS, plot_curves, records, reference_lines, run_all

CONFIG = Path(__file__).resolve().parent / "configs" / "train_e3relax_cpu.yaml"

#: the centre every other recipe changes one thing of
CENTRE: dict[str, Any] = {"optim.lr": 5e-4, "schedule.lr_schedule": "cosine", "schedule.warmup_steps": 200,
                          "model.prior": "atomic_volume"}
#: recipe name -> keys set on the CPU config
RECIPES: dict[str, dict[str, Any]] = {
    "previous": {"optim.lr": 1e-4, "schedule.lr_schedule": "plateau", "schedule.warmup_steps": 0,
                 "model.prior": None},                           # the CPU config before this comparison
    "centre": dict(CENTRE),
    "centre_no_prior": {**CENTRE, "model.prior": None},
    "lr_1e-3": {**CENTRE, "optim.lr": 1e-3},
    "lr_2e-4": {**CENTRE, "optim.lr": 2e-4},
    "plateau_decay": {**CENTRE, "schedule.lr_schedule": "plateau"},
    "batch_8": {**CENTRE, "data.batch_size": 8},
    "batch_32": {**CENTRE, "data.batch_size": 32},
    "ema_0.99": {**CENTRE, "ema.decay": 0.99},
    "ema_no_warmup": {**CENTRE, "ema.warmup": False},
    "width_64": {**CENTRE, "model.hidden_channels": 64},
    "width_192": {**CENTRE, "model.hidden_channels": 192},
    "depth_3": {**CENTRE, "model.num_layers": 3},
}


def runs(args: argparse.Namespace) -> dict[str, tuple[Path, dict[str, Any]]]:
    common = {"device": "cpu", "data.train": f"{args.data}/train.lmdb", "data.val": f"{args.data}/val.lmdb",
              "data.max_val_structures": args.val_structures, "data.num_workers": 0,
              "schedule.time_limit_s": args.cpu_minutes * 60, "schedule.time_clock": "cpu",
              "schedule.max_epochs": 100_000, "schedule.epoch_length": args.every,
              "schedule.early_stop_patience": None, "log.progress_bar": False, "log.figures": False,
              "seed": args.seed}
    return {name: (CONFIG, {**common, **RECIPES[name]}) for name in args.recipes}


def table(curves: dict[str, list[dict[str, float]]], lines: dict[str, dict[str, float]], args) -> str:
    rows = [f"Validation errors after {args.cpu_minutes:g} CPU-minutes per recipe on `{Path(args.data).name}` "
            f"({args.val_structures} validation structures, seed {args.seed}); best = lowest coordinate "
            "error over the run's validations.", "",
            "| recipe | keys set | steps | coordinates (Å) | shape (Å²) | volume (Å³) | best coordinates (Å) |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for name, recs in curves.items():
        last = recs[-1]
        best = min(r["mae_pos"] for r in recs)
        keys = ", ".join(f"`{k}={v}`" for k, v in RECIPES[name].items()) or "(none)"
        rows.append(f"| {name} | {keys} | {int(last['iteration'])} | {last['mae_pos']:.4f} | {last['shape_dev']:.2f} "
                    f"| {last['mae_vol']:.2f} | {best:.4f} |")
    for name, vals in lines.items():
        rows.append(f"| {name} | (no training) | 0 | " + " | ".join(f"{vals[m]:.4f}" if m == "mae_pos" else
                                                                  f"{vals[m]:.2f}" for m, _ in METRICS) + " | |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    add_run_arguments(p, cpu_minutes=6.0, val_structures=300, every=100, out="results/recipes")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not args.render and run_all(runs(args), out, jobs=args.jobs):
        print("some runs stopped; run the same command again to continue them", file=sys.stderr)
        return 1
    curves = {n: records(out / n) for n in args.recipes}
    lines = reference_lines(args.data, args.val_structures)
    (out / "recipes.md").write_text(table(curves, lines, args), encoding="utf-8")
    (out / "recipes.json").write_text(json.dumps({"curves": curves, "lines": lines, "recipes": RECIPES}, indent=2))
    plot_curves(curves, lines, out / "recipes.png", f"{Path(args.data).name}: validation per recipe, "
                f"{args.cpu_minutes:g} CPU-min each")
    print((out / "recipes.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
