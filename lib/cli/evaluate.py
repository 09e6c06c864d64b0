"""``e3relax evaluate``: score a checkpoint on an LMDB split, with the Dummy baseline alongside.

Writes ``per_structure.csv`` (every metric, model and Dummy), ``summary.json`` and ``summary.md``::

    e3relax evaluate --checkpoint runs/mp/checkpoints/best.pt --data data/mp/test --out results/mp
    e3relax evaluate --checkpoint pnictides --data data/pnictides/test.lmdb   # a shipped ensemble

Predictions go through the same path as ``e3relax predict`` (reduced primitive cell, projection onto
the input's space group); ``--no-symmetry`` / ``--no-canonical-cell`` score the model's raw output.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    from e3relax.cli.predict import add_frame_arguments

    p = subparsers.add_parser("evaluate", help="evaluate a checkpoint: per-structure CSV, summary JSON and table",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint file (best.pt / last.pt), run folder, or pretrained name (e3relax pretrained)")
    p.add_argument("--data", required=True, help="LMDB shard or folder of shards (labelled)")
    p.add_argument("--out", default=None,
                   help="output folder; default: <run folder>/eval/<data name>, or results/eval/<name>/<data name> "
                        "for a pretrained name")
    p.add_argument("--batch-size", type=int, default=16, help="structures per batch; default 16")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N; default auto")
    p.add_argument("--weights", default="ema", choices=["ema", "model"], help="EMA (default) or raw weights")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"], help="default: the run's dtype")
    p.add_argument("--num-workers", type=int, default=0, help="data loader workers; default 0")
    add_frame_arguments(p)
    p.add_argument("--skip-bad-records", action="store_true",
                   help="leave out (and count) records that fail validation instead of stopping")
    p.set_defaults(func=run)
    return p


def default_out(checkpoint: str, data: str) -> Path:
    """``<run folder>/eval/<data name>`` for a checkpoint path, ``results/eval/<name>/<data name>`` for a
    pretrained name; the data name drops an ``.lmdb`` suffix so the folder does not look like a database."""
    name = Path(data.rstrip("/")).name
    name = name[: -len(".lmdb")] if name.endswith(".lmdb") else name
    ckpt = Path(checkpoint)
    if not ckpt.exists():  # a pretrained name
        return Path("results") / "eval" / ckpt.name / name
    run_dir = ckpt if ckpt.is_dir() else ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run_dir / "eval" / name


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):  # one line per evaluation is ours; ignite's per-run lines are noise
        import logging

        logging.getLogger("ignite.engine.engine.Engine").setLevel(logging.WARNING)
    from e3relax.cli.predict import frame_options
    from e3relax.engine.report import evaluate_checkpoint

    frames = frame_options(args)
    out = args.out or str(default_out(args.checkpoint, args.data))
    summary = evaluate_checkpoint(args.checkpoint, args.data, out, batch_size=args.batch_size, device=args.device,
                                  weights=args.weights, dtype=args.dtype, num_workers=args.num_workers,
                                  skip_bad_records=args.skip_bad_records, **frames)
    print((Path(out) / "summary.md").read_text(encoding="utf-8"))
    if summary["skipped_records"]:
        print(f"e3relax evaluate: skipped {summary['skipped_records']} bad record(s) of {args.data} "
              "(each is named in the log above)", file=sys.stderr)
    return 0 if summary["num_structures"] else 1
