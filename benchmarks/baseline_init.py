"""The baselines under the old and the new initialisation: validation errors after the same CPU time.

Every baseline trains from its CPU config (``benchmarks/configs/<model>_cpu.yaml``) twice for the
same budget of CPU-seconds of its own process (``schedule.time_limit_s`` on the CPU clock), one
thread each, ``--jobs`` at a time, on the same data and fixed validation subset:

- ``new``: the config as it is (identity at initialisation: zeroed last projections of the
  displacement and lattice updates, residual distances for DeepRelax, bounded lattice strain);
- ``old``: the same config with the initialisation the toolkit had before (``identity_init: false``
  in the model and its heads, unbounded lattice heads, DeepRelax's absolute distances).

Writes ``baseline_init.md`` (final validation errors per model and initialisation, and the steps
reached), ``baseline_init.json`` and ``baseline_init.png`` (validation curves) into ``--out``. Run the
same command again to continue stopped runs; finished ones are not repeated.

Usage (database from ``e3relax data convert poscar_pairs --src ../shared/data/pnictides --out data/pnictides``)::

    python benchmarks/baseline_init.py --data data/pnictides --cpu-minutes 10 --out results/baseline_init
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from e3relax.benchmark.timed_runs import add_run_arguments, plot_curves, records, reference_lines, run_all

CONFIGS = Path(__file__).resolve().parent / "configs"
_OLD_LATTICE = {"model.lattice_head.identity_init": False, "model.lattice_head.max_strain": None}
#: model -> the keys that restore the old initialisation in its CPU config
OLD_INIT: dict[str, dict[str, Any]] = {
    "painn": {"model.displacement_head.identity_init": False, **_OLD_LATTICE},
    "gotennet": {"model.displacement_head.identity_init": False, **_OLD_LATTICE},
    "egnn": {"model.identity_init": False, **_OLD_LATTICE},
    "hegnn": {"model.identity_init": False, **_OLD_LATTICE},
    "equiformer_v2": {"model.identity_init": False, **_OLD_LATTICE},
    "deeprelax": {"model.residual_distances": False, **_OLD_LATTICE},
}


def runs(args: argparse.Namespace) -> dict[str, tuple[Path, dict[str, Any]]]:
    common = {"device": "cpu", "data.train": f"{args.data}/train.lmdb", "data.val": f"{args.data}/val.lmdb",
              "data.batch_size": 16, "data.max_val_structures": args.val_structures, "data.num_workers": 0,
              "schedule.time_limit_s": args.cpu_minutes * 60, "schedule.time_clock": "cpu",
              "schedule.max_epochs": 100_000, "schedule.epoch_length": args.every,
              "schedule.early_stop_patience": None, "log.progress_bar": False, "log.figures": False,
              "seed": args.seed}
    out = {}
    for model in args.models:
        config = CONFIGS / f"{model}_cpu.yaml"
        out[f"{model}_old"] = (config, {**common, **OLD_INIT[model]})
        out[f"{model}_new"] = (config, dict(common))
    return out


def _cell(recs: list[dict[str, float]], metric: str, fmt: str) -> str:
    if not recs:
        return "(no validation)"
    value = recs[-1][metric]
    return "NaN" if not math.isfinite(value) else format(value, fmt)


def table(curves: dict[str, list[dict[str, float]]], lines: dict[str, dict[str, float]], failed: set[str],
          args: argparse.Namespace) -> str:
    rows = [f"Validation errors after {args.cpu_minutes:g} CPU-minutes per run on `{Path(args.data).name}` "
            f"({args.val_structures} validation structures, seed {args.seed}, batch 16, one thread).", "",
            "| model | init | steps | coordinates (Å) | shape (Å²) | volume (Å³) | finished |",
            "|---|---|---:|---:|---:|---:|---|"]
    for model in args.models:
        for init in ("old", "new"):
            name = f"{model}_{init}"
            recs = curves.get(name, [])
            steps = int(recs[-1]["iteration"]) if recs else 0
            rows.append(f"| {model} | {init} | {steps} | {_cell(recs, 'mae_pos', '.4f')} | "
                        f"{_cell(recs, 'shape_dev', '.2f')} | {_cell(recs, 'mae_vol', '.2f')} | "
                        f"{'no (see its log)' if name in failed else 'yes'} |")
    for name, vals in lines.items():
        rows.append(f"| {name} | (no training) | 0 | {vals['mae_pos']:.4f} | {vals['shape_dev']:.2f} | "
                    f"{vals['mae_vol']:.2f} | |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(OLD_INIT), choices=list(OLD_INIT))
    add_run_arguments(p, cpu_minutes=10.0, val_structures=200, every=200, out="results/baseline_init")
    args = p.parse_args(argv)
    out = Path(args.out)
    failed = set() if args.render else set(run_all(runs(args), out, jobs=args.jobs))
    curves = {}
    for name in runs(args):
        try:
            curves[name] = records(out / name)
        except FileNotFoundError:
            curves[name] = []
    lines = reference_lines(args.data, args.val_structures)
    (out / "baseline_init.md").write_text(table(curves, lines, failed, args), encoding="utf-8")
    (out / "baseline_init.json").write_text(json.dumps({"curves": curves, "lines": lines, "old_init": OLD_INIT,
                                                        "failed": sorted(failed)}, indent=2))
    plot_curves({n: c for n, c in curves.items() if c}, lines, out / "baseline_init.png",
                f"{Path(args.data).name}: old and new initialisation, {args.cpu_minutes:g} CPU-min each")
    print((out / "baseline_init.md").read_text(encoding="utf-8"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
