"""``e3relax evaluate``: score a checkpoint on an LMDB split, with the Dummy baseline alongside.

Writes ``per_structure.csv`` (every metric, model and Dummy), ``summary.json`` and ``summary.md``::

    e3relax evaluate --checkpoint runs/mp/checkpoints/best.pt --data data/mp/test --out results/mp
"""
from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evaluate", help="evaluate a checkpoint: per-structure CSV, summary JSON and table",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint file (best.pt / last.pt) or a run folder")
    p.add_argument("--data", required=True, help="LMDB shard or folder of shards (labelled)")
    p.add_argument("--out", default=None, help="output folder; default: <checkpoint folder>/eval_<data name>")
    p.add_argument("--batch-size", type=int, default=16, help="structures per batch; default 16")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N; default auto")
    p.add_argument("--weights", default="ema", choices=["ema", "model"], help="EMA (default) or raw weights")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"], help="default: the run's dtype")
    p.add_argument("--num-workers", type=int, default=0, help="data loader workers; default 0")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):  # one line per evaluation is ours; ignite's per-run lines are noise
        import logging

        logging.getLogger("ignite.engine.engine.Engine").setLevel(logging.WARNING)
    from pathlib import Path

    from e3relax.engine.report import evaluate_checkpoint

    ckpt = Path(args.checkpoint)
    out = args.out or str((ckpt if ckpt.is_dir() else ckpt.parent) / f"eval_{Path(args.data).name}")
    summary = evaluate_checkpoint(ckpt, args.data, out, batch_size=args.batch_size, device=args.device,
                                  weights=args.weights, dtype=args.dtype, num_workers=args.num_workers)
    print((Path(out) / "summary.md").read_text(encoding="utf-8"))
    return 0 if summary["num_structures"] else 1
