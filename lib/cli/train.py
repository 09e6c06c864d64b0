"""``e3relax train``: train any registered model with the Ignite engines.

Examples::

    e3relax data convert poscar_pairs --src ../shared/data/pnictides --out data/pnictides   # data first
    e3relax train --config benchmarks/configs/train_e3relax_cpu.yaml   # reads data/pnictides/{train,val}.lmdb
    e3relax train --config run.yaml optim.lr=3e-4 data.batch_size=16 run_dir=runs/lr3e-4
    e3relax train --resume runs/lr3e-4                      # continue exactly where it stopped
    e3relax train --config run.yaml --overwrite             # replace the run already in run_dir
    e3relax train --config run.yaml --nproc-per-node 4      # 4 local processes (DDP)
    e3relax train --config ft.yaml --init-from runs/base/checkpoints/best.pt   # fine-tune (EMA weights)

A new run refuses a folder that already holds one (``--resume`` continues it, ``--overwrite``
replaces it). Ctrl-C or SIGTERM saves ``checkpoints/last.pt`` at the current step, prints how to
resume and exits with 130 / 143; the resumed run equals an uninterrupted one.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

__all__ = ["add_parser", "run", "resolve_from_args"]

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train a model (Ignite; TensorBoard, checkpoints, resume, DDP)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML run config (see docs/training.md); optional with --resume")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=3e-4")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from checkpoints/last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in a run folder that holds a run (removes its config, checkpoints, tb)")
    p.add_argument("--skip-bad-records", action="store_true",
                   help="leave out (and count) records that fail validation instead of stopping (data.skip_bad_records)")
    p.add_argument("--nproc-per-node", type=int, default=None, help="local processes (DDP); default 1")
    p.add_argument("--init-from", metavar="CKPT", help="start from this checkpoint's weights (fine-tuning)")
    p.add_argument("--run-dir", help="output folder (same as run_dir=...)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (same as device=...)")
    p.set_defaults(func=run)
    return p


def resolve_from_args(args: argparse.Namespace) -> tuple[dict, bool]:
    """The resolved config and whether to resume, from parsed command-line arguments."""
    from e3relax.engine.config import ConfigError, load_config, merge, resolve_config

    overrides = list(args.overrides or [])
    user: dict = {}
    if args.resume:
        saved = Path(args.resume) / "config.yaml"
        if not saved.exists():
            raise ConfigError(f"--resume {args.resume}: no config.yaml there; is it a run folder?")
        user = load_config(saved)
        user["run_dir"] = str(args.resume)
        if args.config:
            log.warning("--config %s ignored with --resume (the run's own config.yaml is used); "
                        "pass changes as KEY=VALUE overrides", args.config)
    elif args.config:
        user = load_config(args.config)
    else:
        raise ConfigError("give --config FILE (or --resume RUN_DIR)")
    extra = {}
    if args.nproc_per_node is not None:
        extra["distributed"] = {"nproc_per_node": args.nproc_per_node}
    for key in ("init_from", "run_dir", "device"):
        if getattr(args, key, None):
            extra[key] = getattr(args, key)
    if getattr(args, "skip_bad_records", False):
        extra["data"] = {"skip_bad_records": True}
    source = f"{Path(args.resume) / 'config.yaml'}" if args.resume else str(args.config)
    try:
        resolve_config(user)  # errors of the file itself, named as such
    except ConfigError as exc:
        raise ConfigError(f"config {source}: {exc}", exc.key) from exc
    try:
        return resolve_config(merge(user, extra, strict=False), overrides), bool(args.resume)
    except ConfigError as exc:
        culprit = next((o for o in overrides if exc.key and o.partition("=")[0].strip() == exc.key), None)
        raise ConfigError(f"override {culprit}: {exc}" if culprit else str(exc), exc.key) from exc


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):  # one line per evaluation is ours; ignite's per-run lines are noise
        logging.getLogger("ignite.engine.engine.Engine").setLevel(logging.WARNING)
    from e3relax.engine.trainer import prepare_run_dir, train

    config, resume = resolve_from_args(args)
    if resume and args.overwrite:
        from e3relax.engine.config import ConfigError

        raise ConfigError("--resume continues a run and --overwrite replaces it: give one of them")
    prepare_run_dir(config["run_dir"], resume=resume, overwrite=args.overwrite)
    summary = train(config, resume=resume)
    if summary is not None:
        print(json.dumps(summary, indent=2, default=str))
        stop = summary.get("stopped_nonfinite")
        if stop:
            print(f"e3relax train: stopped at iteration {stop['iteration']}: the loss or its gradient was not "
                  f"finite for more than {config['optim']['max_nonfinite_steps']} steps in a row, after "
                  f"{len(summary.get('rewinds') or [])} rewind(s) at a lower rate; the last good "
                  f"state (iteration {stop['saved_iteration']}) is in {config['run_dir']}/checkpoints/last.pt "
                  "(lower optim.lr, then e3relax train --resume)", file=sys.stderr)
            return 1
    return 0
