#!/usr/bin/env python
"""The space-group projection in training or at prediction only, at equal CPU time.

Two runs of E3Relax with the CPU recipe (``benchmarks/configs/train_e3relax_cpu.yaml``), the same
budget of CPU-seconds of their own process, one thread, the same seed and validation subset:

- ``predict_only``: trained on the bare model output (``symmetry.train: false``, the default);
- ``train_projection``: every emitted layer projected onto the input's space group before the
  loss and at validation (``symmetry.train: true``), as prediction projects it;
- ``canonical_frame`` (with ``--canonical-data``): trained on the same pairs converted with
  ``e3relax data convert ... --canonical-frame``, i.e. in the frame prediction puts every input
  into (``symmetry.train: false``).

The best-on-validation checkpoint of each is then scored on the test split through the one
evaluation path, raw and as ``predict`` returns it (canonical frame and projection), beside the
Dummy: coordinate MAE, shape deviation, volume MAE, StructureMatcher match rates and space-group
agreement with the DFT label (:mod:`symmetry_effect`). Writes ``symmetry_training.md`` and ``.json``
into ``--out``; the same command again continues stopped runs::

    OMP_NUM_THREADS=1 python benchmarks/symmetry_training.py --data data/srnbh --cpu-minutes 15 \\
        --out results/symmetry_training_srnbh
    e3relax data convert vasp_dirs --src ../shared/data/srnbh --out data/srnbh_canonical --canonical-frame
    OMP_NUM_THREADS=1 python benchmarks/symmetry_training.py --data data/srnbh --cpu-minutes 15 \\
        --canonical-data data/srnbh_canonical --out results/symmetry_training_srnbh

Every variant is scored on the test split of ``--data`` (the structures as users give them).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from symmetry_effect import GEOMETRY, MATCHING, score

from e3relax.benchmark.timed_runs import add_run_arguments, records, run_all

CONFIG = Path(__file__).resolve().parent / "configs" / "train_e3relax_cpu.yaml"
VARIANTS = ("predict_only", "train_projection", "canonical_frame")
SETTINGS = {"raw": {"symmetry": False, "canonical": False}, "as predicted": {}}


def runs(args: argparse.Namespace) -> dict:
    common = {"device": "cpu", "data.train": f"{args.data}/train.lmdb", "data.val": f"{args.data}/val.lmdb",
              "data.max_val_structures": args.val_structures, "schedule.time_limit_s": args.cpu_minutes * 60,
              "schedule.time_clock": "cpu", "schedule.max_epochs": 100_000, "schedule.epoch_length": args.every,
              "schedule.early_stop_patience": None, "log.progress_bar": False, "log.figures": False,
              "seed": args.seed, "symmetry.symprec": args.symprec}
    out = {"predict_only": (CONFIG, {**common, "symmetry.train": False}),
           "train_projection": (CONFIG, {**common, "symmetry.train": True})}
    if args.canonical_data:
        out["canonical_frame"] = (CONFIG, {**common, "symmetry.train": False,
                                           "data.train": f"{args.canonical_data}/train.lmdb",
                                           "data.val": f"{args.canonical_data}/val.lmdb"})
    return out


def test_scores(out: Path, names: list[str], data: str | Path, symprec: float) -> dict:
    """Each run's best checkpoint on the test split, raw and as predicted, and the Dummy."""
    import torch

    from e3relax.datasets.reader import LmdbDataset
    from e3relax.engine.evaluation import evaluate
    from e3relax.predict import Relaxer

    torch.set_num_threads(1)
    test = LmdbDataset(f"{data}/test.lmdb")
    res: dict = {}
    for name in names:
        for setting, kw in SETTINGS.items():
            relaxer = Relaxer.from_checkpoint(out / name / "checkpoints" / "best.pt", symprec=symprec, **kw)
            t0 = time.process_time()
            table = evaluate(relaxer, test, keep_structures=True, progress=None)
            res[f"{name}, {setting}"] = {**score(table.structures, table.references, table.ids, table.metrics),
                                         "cpu_s": time.process_time() - t0}
            if "Dummy" not in res:
                res["Dummy"] = score(table.inputs, table.references, table.ids, table.dummy)
    return res


def table(curves: dict, tests: dict, args: argparse.Namespace) -> str:
    rows = [f"E3Relax, CPU recipe, {args.cpu_minutes:g} CPU-minutes per run on `{Path(args.data).name}`, seed "
            f"{args.seed}; test split, best-on-validation checkpoint, spglib agreement at symprec 0.1.", "",
            "| training | scored | steps | coord. MAE (Å) | shape dev. (Å²) | volume MAE (Å³) | match strict "
            "| match loose | space group agree |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in sorted(tests, key=lambda k: k != "Dummy"):
        r = tests[key]
        name, _, setting = key.partition(", ")
        steps = int(curves[name][-1]["iteration"]) if name in curves else 0
        rows.append(f"| {name} | {setting or 'the input'} | {steps} | {r['mae_pos']:.4f} | {r['shape_dev']:.3f} | "
                    f"{r['mae_vol']:.3f} | " + " | ".join(f"{100 * r[k]:.1f}%" for k in MATCHING) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--symprec", type=float, default=0.01, help="tolerance of the projection (A)")
    p.add_argument("--canonical-data", default=None,
                   help="the same data converted with --canonical-frame: adds the canonical_frame run")
    add_run_arguments(p, cpu_minutes=15.0, val_structures=300, every=100, out="results/symmetry_training")
    args = p.parse_args(argv)
    out = Path(args.out)
    todo = runs(args)
    if not args.render and run_all(todo, out, jobs=args.jobs):
        print("some runs stopped; run the same command again to continue them", file=sys.stderr)
        return 1
    curves = {n: records(out / n) for n in todo}
    tests = test_scores(out, list(todo), args.data, args.symprec)
    (out / "symmetry_training.md").write_text(table(curves, tests, args), encoding="utf-8")
    (out / "symmetry_training.json").write_text(json.dumps({"curves": curves, "test": tests,
                                                            "geometry": GEOMETRY}, indent=1))
    print((out / "symmetry_training.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
