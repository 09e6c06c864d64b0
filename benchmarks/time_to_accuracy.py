"""Time to accuracy: the reference recipe and the toolkit's CPU recipe, side by side, same CPU time.

Two trainings run at once, one process and one thread each (one per core), for the same budget of
CPU-seconds of their own process (``schedule.time_limit_s``, ``time_clock: cpu``):

- (a) the reference recipe: ``paper_faithful`` E3Relax (the authors' computation) at hidden 128 on
  the reference graph, lr 1e-4, EMA 0.999, plateau decay, batch 32, no denormal flushing and no
  compiled kernels;
- (b) the toolkit's default CPU recipe, ``benchmarks/configs/train_e3relax_cpu.yaml``.

Both validate on the same fixed subset of the validation split. The script plots validation
coordinate, shape and volume error against CPU-seconds, with the Dummy (the unrelaxed input) and,
where registered, the atomic-volume prior as horizontal lines, and reports the CPU time (b) needs
to reach (a)'s final coordinate error. Run it again on the same ``--out`` to continue runs that
were stopped (each resumes from its last checkpoint); finished runs are not repeated.

Usage (databases from ``e3relax data convert poscar_pairs --src ../shared/data/pnictides ...``)::

    python benchmarks/time_to_accuracy.py --data data/pnictides --ref-data data/pnictides_ref \\
        --cpu-minutes 45 --out results/time_to_accuracy
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from e3relax.benchmark.timed_runs import METRICS, plot_curves, records, reference_lines, run_all, time_to_reach

CONFIGS = Path(__file__).resolve().parent / "configs"
NAMES = {"reference": "(a) reference recipe", "toolkit": "(b) toolkit CPU recipe"}


def runs(args: argparse.Namespace) -> dict[str, tuple[Path, dict[str, Any]]]:
    """The two runs: config file and dotted-key overrides."""
    common = {"device": "cpu", "data.max_val_structures": args.val_structures, "data.num_workers": 0,
              "schedule.time_limit_s": args.cpu_minutes * 60, "schedule.time_clock": "cpu",
              "schedule.max_epochs": 100_000, "schedule.early_stop_patience": None,
              "log.progress_bar": False, "log.figures": False}
    ref = {**common, "model.paper_faithful": True, "model.hidden_channels": 128, "model.num_rbf": 64,
           "data.train": f"{args.ref_data}/train.lmdb", "data.val": f"{args.ref_data}/val.lmdb",
           "data.batch_size": 32, "optim.lr": 1e-4, "ema.decay": 0.999, "schedule.epoch_length": args.ref_every,
           "schedule.lr_schedule": "plateau", "flush_denormal": False, "compile_kernels": False}
    mine = {**common, "data.train": f"{args.data}/train.lmdb", "data.val": f"{args.data}/val.lmdb",
            "schedule.epoch_length": args.toolkit_every}
    return {"reference": (CONFIGS / "train_e3relax.yaml", ref), "toolkit": (CONFIGS / "train_e3relax_cpu.yaml", mine)}


def summarise(curves: dict[str, list[dict[str, float]]], lines: dict[str, dict[str, float]]) -> dict[str, Any]:
    ref, mine = curves["reference"][-1], curves["toolkit"][-1]
    reach = time_to_reach(curves["toolkit"], ref["mae_pos"])
    return {"final": {"reference": ref, "toolkit": mine}, "reference_lines": lines,
            "toolkit_cpu_s_to_reference_final": reach,
            "fraction_of_reference_time": None if reach is None else reach / ref["cpu_s"],
            "toolkit_below_reference": {m: 1 - mine[m] / ref[m] for m, _ in METRICS},
            "toolkit_below_lines": {k: {m: 1 - mine[m] / v[m] for m, _ in METRICS} for k, v in lines.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="converted folder with the toolkit's graph (train/val.lmdb)")
    p.add_argument("--ref-data", required=True, help="the same split converted with the reference graph")
    p.add_argument("--cpu-minutes", type=float, default=45.0, help="CPU budget of each run; default 45")
    p.add_argument("--val-structures", type=int, default=300, help="fixed validation subset; default 300")
    p.add_argument("--ref-every", type=int, default=50, help="reference steps between validations")
    p.add_argument("--toolkit-every", type=int, default=250, help="toolkit steps between validations")
    p.add_argument("--out", default="results/time_to_accuracy")
    p.add_argument("--render", action="store_true", help="only redraw from the runs' checkpoints")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not args.render and run_all(runs(args), out, jobs=2):
        print("a run stopped; run the same command again to continue it", file=sys.stderr)
        return 1
    curves = {NAMES[n]: records(out / n) for n in NAMES}
    lines = reference_lines(args.data, args.val_structures)
    result = summarise({n: curves[NAMES[n]] for n in NAMES}, lines)
    (out / "result.json").write_text(json.dumps({"curves": curves, **result}, indent=2))
    plot_curves(curves, lines, out / "time_to_accuracy.png",
                f"pnictides validation ({args.val_structures} structures), {args.cpu_minutes:g} CPU-min per run")
    print(yaml.safe_dump(result, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
