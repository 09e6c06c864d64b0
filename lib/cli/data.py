"""``e3relax data``: convert published layouts into the safe LMDB format, and inspect databases.

    e3relax data convert poscar_pairs --src ../shared/data/pnictides --out data/pnictides --workers 2
    e3relax data convert vasp_dirs --src runs/ --out data/runs --opt trajectory=true --opt num_frames=5
    e3relax data info data/pnictides/train.lmdb

Importer-specific options go through ``--opt KEY=VALUE`` (values parsed as YAML scalars), graph
options through ``--graph NAME`` and ``--graph-opt KEY=VALUE``. Other modules may add ``data``
sub-commands: every module in :data:`EXTRA_COMMANDS` that exists and defines
``add_data_parser(subparsers)`` is added.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: optional modules adding ``e3relax data <cmd>`` sub-commands through ``add_data_parser(subparsers)``
EXTRA_COMMANDS = ("e3relax.datasets.generate",)


def _kv(text: str) -> tuple[str, Any]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"'{text}': expected KEY=VALUE")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), yaml.safe_load(value) if value.strip() else None


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert a published layout into LMDB splits + report.json",
                       description="Convert a dataset layout into out/{train,val,test}.lmdb and out/report.json.")
    p.add_argument("layout", help="importer name (e3relax data layouts lists them)")
    p.add_argument("--src", required=True, help="source folder or file of the layout")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--split-ratio", default="8:1:1", help="train:val:test for items without a published split")
    p.add_argument("--seed", type=int, default=0, help="seed of the id-hash split")
    p.add_argument("--keep-frame", action="store_true", help="keep the relaxed raw frame (no rigid-rotation removal)")
    p.add_argument("--canonical-frame", nargs="?", type=float, const=0.01, default=None, metavar="SYMPREC",
                   help="put every pair into the frame predict uses (primitive cell, reduced basis, atom 0 at the "
                        "origin; spglib symprec in A, default 0.01)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow importers that unpickle (legacy LMDBs, MPF pickles); only for trusted files")
    p.add_argument("--opt", type=_kv, action="append", default=[], metavar="KEY=VALUE", help="importer option")
    g = p.add_argument_group("graph")
    g.add_argument("--graph", default="periodic_multi_edge", help="graph builder name")
    g.add_argument("--graph-opt", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="graph builder option, e.g. cutoff=6.0")
    v = p.add_argument_group("validation")
    v.add_argument("--min-distance", type=float, help="atoms closer than this (A) count as coincident (skip)")
    v.add_argument("--warn-distance", type=float, help="atoms closer than this (A) get a warning")
    r = p.add_argument_group("run")
    r.add_argument("--chunk-size", type=int, default=1024, help="items per chunk/shard (unit of resumption)")
    r.add_argument("--limit", type=int, help="convert only the first N items")
    r.add_argument("--overwrite", action="store_true", help="replace a finished conversion in --out")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_convert)


def _thresholds(args: argparse.Namespace):
    from e3relax.structures import ValidationThresholds

    values = {k: getattr(args, k) for k in ("min_distance", "warn_distance") if getattr(args, k) is not None}
    return ValidationThresholds(**values) if values else None


def run_convert(args: argparse.Namespace) -> int:
    """Run ``e3relax data convert``; exit status 1 when nothing converted or the source is unusable."""
    from e3relax.datasets.convert import convert
    from e3relax.datasets.convert_report import format_summary
    from e3relax.registry import IMPORTERS, RegistryError

    from e3relax.errors import InputError

    try:
        importer = IMPORTERS.build({"name": args.layout, "src": args.src, **dict(args.opt)},
                                   trust_pickle=args.trust_pickle)
    except (RegistryError, FileNotFoundError, PermissionError, ValueError) as exc:
        raise InputError(f"layout {args.layout}, --src {args.src}: {exc}") from exc
    graph = {"name": args.graph, **dict(args.graph_opt)}
    try:
        report = convert(importer, args.out, layout=args.layout, graph=graph, workers=args.workers,
                         split_ratio=args.split_ratio, seed=args.seed, keep_frame=args.keep_frame,
                         thresholds=_thresholds(args), chunk_size=args.chunk_size, limit=args.limit,
                         overwrite=args.overwrite, progress=not args.no_progress,
                         canonical_frame=args.canonical_frame)
    except (FileExistsError, ValueError, RegistryError) as exc:
        raise InputError(str(exc)) from exc
    print(format_summary(report, args.out))
    if report["counts"]["converted"] == 0:
        log.error("no item of '%s' could be converted; see %s", args.src, Path(args.out) / "report.json")
        return 1
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="summarise an LMDB database (file, shard folder, or conversion folder)")
    p.add_argument("path", help="a .lmdb file or folder, or a conversion output folder")
    p.add_argument("--json", action="store_true", help="print the metadata as JSON")
    p.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    """Run ``e3relax data info``: format, graph, source, counts and atom-count statistics."""
    from e3relax.datasets.convert_report import format_summary
    from e3relax.datasets.reader import LmdbDataset
    from e3relax.errors import InputError, MissingPathError

    path = Path(args.path)
    if not path.exists():
        raise MissingPathError(f"{path} does not exist")
    targets = sorted(path.glob("*.lmdb")) if path.is_dir() and not list(path.glob("shard_*.lmdb")) else [path]
    if not targets:
        raise InputError(f"{path}: no .lmdb database here (an empty folder?)")
    for target in targets:
        ds = LmdbDataset(target)
        meta = ds.metadata
        if args.json:
            print(json.dumps({k: v for k, v in meta.items() if k != "natoms"}, indent=1))
            continue
        n = ds.natoms
        print(f"{target}: {len(ds)} structures in {len(ds.shards)} shard(s), split '{meta.get('split')}', "
              f"format {meta['format']} v{meta['format_version']}")
        if len(n):
            print(f"  atoms per structure: min {n.min()}, median {int(sorted(n)[len(n) // 2])}, max {n.max()}, "
                  f"total {n.sum()}")
        print(f"  graph: {json.dumps(meta.get('graph', {}), sort_keys=True)}")
        src = meta.get("source", {})
        print(f"  source: {src.get('layout')} {src.get('src')} (keep_frame={src.get('keep_frame')})")
    report = (path if path.is_dir() else path.parent) / "report.json"
    if report.is_file() and not args.json:
        print(format_summary(json.loads(report.read_text(encoding="utf-8")), report.parent))
    return 0


def _add_layouts(sub) -> None:
    p = sub.add_parser("layouts", help="list the registered importers (layouts)")
    p.set_defaults(func=run_layouts)


def run_layouts(args: argparse.Namespace) -> int:
    """Print every registered importer with the first line of its docstring."""
    from e3relax.registry import IMPORTERS

    for name in IMPORTERS.names():
        doc = (IMPORTERS.get(name).__doc__ or "").strip().splitlines()
        print(f"{name:14s} {doc[0] if doc else ''}")
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="measure reader throughput (structures/s through a DataLoader)")
    p.add_argument("path", help="a .lmdb file or shard folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--epochs", type=int, default=1, help="passes over the data after one warm-up batch")
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    """Time full passes of a shuffled DataLoader (collate included) over a database."""
    import time

    import torch

    from e3relax.datasets.reader import LmdbDataset
    from e3relax.errors import InputError
    from e3relax.records import collate

    ds = LmdbDataset(args.path)
    if len(ds) == 0:
        raise InputError(f"{args.path} holds no structures: nothing to time")
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers,
                                         collate_fn=collate, persistent_workers=args.num_workers > 0)
    next(iter(loader))  # warm-up: worker start, first environment opening
    n, t0 = 0, time.perf_counter()
    for _ in range(args.epochs):
        for batch in loader:
            n += int(batch.num_graphs)
    dt = time.perf_counter() - t0
    print(f"{args.path}: {n} structures in {dt:.2f} s = {n / dt:.0f} structures/s "
          f"(batch {args.batch_size}, num_workers {args.num_workers})")
    return 0


def add_parser(subparsers) -> None:
    """Register ``e3relax data`` and its sub-commands."""
    p = subparsers.add_parser("data", help="dataset conversion and inspection",
                              description="Convert published dataset layouts into the safe LMDB format.")
    sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    _add_convert(sub)
    _add_info(sub)
    _add_layouts(sub)
    _add_bench(sub)
    for name in EXTRA_COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        if hasattr(module, "add_data_parser"):
            module.add_data_parser(sub)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
