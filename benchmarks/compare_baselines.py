#!/usr/bin/env python
"""Train every registered model under one budget and print the paper's tables side by side.

With no arguments it uses the built-in CHGNet-relaxed dataset and a small budget, 60 CPU-seconds of
training per model, two models at a time on a machine with two or more cores (5 minutes on an
idle 2-core machine, longer on a busy one)::

    python benchmarks/compare_baselines.py

Real data, converted on the fly (kept under ``--data-cache``), with ablations and three seeds::

    python benchmarks/compare_baselines.py --data ../shared/data/pnictides --layout poscar_pairs \\
        --wall-time 300 --steps 100000 --seeds 0,1,2 --ablations --out results/compare_pnictides

Writes to ``--out``: results.md / .csv / .json (Tables 1-3, efficiency, CHGNet comparison, energy
check), results_per_seed.csv, per_structure/*.csv, figures/*.png (error distributions, violin plot,
validation curves of every run), and runs/<model>_s<seed>/ with
the TensorBoard events (``tensorboard --logdir OUT/runs`` overlays every model) and checkpoints.
Running the same command again on the same ``--out`` continues: finished (model, seed) runs are
kept, stopped ones resume from their last checkpoint (``--fresh`` starts over). ``--jobs N`` runs N
of them at once, one process and one thread each; ``--cpu-time`` caps each run in CPU-seconds of
its own process and ``--patience`` stops it at its validation plateau. Seeds run as separate
comparisons are combined with ``--render --out A --merge B``. A long, converged comparison::

    python benchmarks/compare_baselines.py --data ../shared/data/srnbh --layout vasp_dirs \
        --cpu-time 10800 --patience 10 --steps 1000000 --eval-every 250 --seeds 0,1 --ablations \
        --jobs 2 --out results/converged_srnbh
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

SCRIPT_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG_DIR = SCRIPT_DIR / "configs"

log = logging.getLogger("compare_baselines")

#: training budget of each model in the zero-argument run, in CPU-seconds of its own process
ZERO_ARG_CPU_S = 60.0
#: the zero-argument run trains this many models at once at most (one process per core)
ZERO_ARG_MAX_JOBS = 2


def default_jobs() -> int:
    """Parallel runs for the zero-argument comparison: one per core this process may use, at most
    :data:`ZERO_ARG_MAX_JOBS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(ZERO_ARG_MAX_JOBS, cores))


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from exc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from e3relax.benchmark.budget import LR_SCHEDULES
    from e3relax.cli.predict import add_frame_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--data", default=None, help="LMDB folder with train/val/test.lmdb, or a layout's source "
                   "path with --layout; default: the built-in dataset")
    d.add_argument("--layout", default=None, help="importer name to convert --data with (poscar_pairs, vasp_dirs, ...)")
    d.add_argument("--data-cache", default="results/data", help="where converted data is kept (and reused)")
    d.add_argument("--split-ratio", default="8:1:1", help="train:val:test for layouts without a published split")
    d.add_argument("--data-seed", type=int, default=0, help="seed of the data split")
    d.add_argument("--limit", type=int, default=None, help="convert only the first N items")
    m = p.add_argument_group("models")
    m.add_argument("--models", default="all", help="'all' or a comma-separated list of registered models")
    m.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=False,
                   help="also train the E3Relax ablations (Table 3)")
    m.add_argument("--config-dir", default=str(DEFAULT_CONFIG_DIR), help="folder of <model>_<size>.yaml configs")
    m.add_argument("--size", default="cpu", help="config size suffix: 'cpu' (<model>_cpu.yaml) or '' (paper size)")
    b = p.add_argument_group("budget (identical for every model)")
    b.add_argument("--steps", type=int, default=None, help="optimiser steps per model")
    b.add_argument("--epochs", type=int, default=None, help="validation rounds per model (steps = epochs x eval-every)")
    b.add_argument("--wall-time", type=float, default=None, help="wall-clock seconds of training per model")
    b.add_argument("--cpu-time", type=float, default=None,
                   help="CPU-seconds of training per run, of its own process (a cap that machine load does not "
                        "change); replaces --wall-time")
    b.add_argument("--patience", type=int, default=None,
                   help="stop a run after this many validations without improvement (its validation plateau)")
    b.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=None,
                   help="one learning-rate schedule for every model, each at its own peak rate (cosine: decay "
                        "over the cap, the CPU recipe's); default: each model's config decides")
    b.add_argument("--eval-every", type=int, default=50, help="steps between validations")
    b.add_argument("--batch-size", type=int, default=16)
    b.add_argument("--max-val", type=int, default=200, help="validate on the first K validation structures")
    b.add_argument("--seeds", type=_int_list, default=[0], help="comma-separated training seeds")
    r = p.add_argument_group("evaluation")
    r.add_argument("--match-max", type=int, default=None, help="StructureMatcher/spglib on the first K test structures")
    r.add_argument("--timing-structures", type=int, default=32, help="structures timed for inference speed")
    r.add_argument("--chgnet", type=int, default=None, help="CHGNet+FIRE on the first K test structures, from the input and from the prediction of "
                        "E3Relax's seed with the best validation error, in --jobs processes (0: skip)")
    r.add_argument("--chgnet-max-steps", type=int, default=500)
    r.add_argument("--fmax", type=float, default=0.05, help="FIRE force threshold (eV/A)")
    add_frame_arguments(r)  # --no-symmetry, --(no-)canonical-cell (default: the training pairs' frame), --symprec
    o = p.add_argument_group("run")
    o.add_argument("--device", default="cpu", help="cpu | cuda | cuda:1 | auto")
    o.add_argument("--out", default="results/compare", help="output folder")
    o.add_argument("--jobs", type=int, default=None,
                   help="(model, seed) runs (and CHGNet relaxations) at a time, each in its own process with one "
                        "thread (one per core); "
                        f"default: 1, or up to {ZERO_ARG_MAX_JOBS} (one per available core) for the zero-argument run")
    o.add_argument("--resume", action="store_true",
                   help="(the default) continue the comparison in OUT: finished runs are kept, stopped ones resume")
    o.add_argument("--fresh", action="store_true", help="discard the runs and records in OUT and start over")
    o.add_argument("--progress-bar", action="store_true", help="show the engine's per-step progress bar")
    o.add_argument("--render", action="store_true", help="only rewrite results.md/.csv from OUT/results.json")
    o.add_argument("--merge", action="append", default=[], metavar="DIR",
                   help="with --render: first add the seeds recorded in DIR/results.json (same data and budget)")
    args = p.parse_args(argv)
    if not args.symprec > 0:
        p.error(f"--symprec must be a positive number of Angstrom, got {args.symprec}")
    zero = args.data is None and args.layout is None
    if args.cpu_time is not None and args.wall_time is not None:
        p.error("give --cpu-time or --wall-time, not both")
    if args.steps is None and args.epochs is None and args.wall_time is None and args.cpu_time is None:
        # the zero-argument budget, counted on each run's own CPU clock so a busy machine does not
        # shrink it: 5 minutes for every model on an idle 2-core machine (docs/results.md)
        args.steps, args.cpu_time = 10_000, ZERO_ARG_CPU_S
    if args.jobs is None:
        args.jobs = default_jobs() if zero else 1
    if args.jobs < 1:
        p.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.steps is None:
        args.steps = args.epochs * args.eval_every if args.epochs else 10**9
    if args.chgnet is None:
        args.chgnet = 6 if zero else 30
    if args.match_max is None:
        args.match_max = None if zero else 300
    return args


def main(argv: list[str] | None = None) -> int:
    from e3relax.benchmark.jobs import job_logging

    job_logging()  # as in each job's own log: the comparison's lines and every validation of the trainer
    args = parse_args(argv)
    from e3relax.benchmark.compare import Comparison

    if args.render:
        from e3relax.benchmark.saved import render_existing

        try:
            print(render_existing(Path(args.out), [Path(m) for m in args.merge]))
        except (FileNotFoundError, ValueError) as exc:
            print(f"compare_baselines: error: {exc}", file=sys.stderr)
            return 2
        return 0
    from e3relax.errors import Interrupted, UserError

    try:
        comparison = Comparison.from_args(args)
        results = comparison.run()
    except UserError as exc:
        print(f"compare_baselines: error: {exc}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt):
        print("compare_baselines: stopped; run the same command again to continue", file=sys.stderr)
        return 130
    print(comparison.markdown(results))
    from e3relax.benchmark.tables import plain_summary

    print("Summary (test split, mean over seeds):\n" + plain_summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
