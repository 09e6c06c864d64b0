#!/usr/bin/env python
"""What the canonical frame and the space-group projection change on a labelled test split.

Evaluates one checkpoint three ways through the one evaluation path (raw model output; projection
only; canonical frame and projection, the default), and scores the Dummy (the unrelaxed input)
alongside: coordinate MAE, shape deviation, volume MAE (means over structures), StructureMatcher
match rates (strict, loose) and spglib space-group agreement with the DFT label (symprec 0.1, as
docs/results.md). Prints a markdown table and writes the numbers as JSON::

    OMP_NUM_THREADS=1 python benchmarks/symmetry_effect.py --checkpoint pnictides \\
        --data runs/pretrained/data/pnictides/test.lmdb --out results/symmetry_effect_pnictides.json
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

SETTINGS = {
    "raw model output": {"symmetry": False, "canonical": False},
    "projection only": {"symmetry": True, "canonical": False},
    "canonical frame + projection (default)": {"symmetry": True, "canonical": True},
}
GEOMETRY = ("mae_pos", "shape_dev", "mae_vol")
MATCHING = ("match_strict", "match_loose", "spg_match")


def score(structures, references, ids, geometry: dict) -> dict:
    """Means of the geometry columns plus match rates and space-group agreement."""
    from e3relax.metrics import match_metrics

    m = match_metrics(structures, references, ids=ids)
    row = {k: float(np.nanmean(geometry[k])) for k in GEOMETRY}
    row.update({k: float(np.mean(m[k])) for k in MATCHING})
    row["match_timeouts"] = int(m["match_timeout"].sum())
    return row


def main(argv: list[str] | None = None) -> int:
    import torch

    from e3relax.datasets.reader import LmdbDataset
    from e3relax.engine.evaluation import evaluate
    from e3relax.predict import Relaxer

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="pretrained name, checkpoint or run folder")
    p.add_argument("--data", required=True, help="labelled LMDB split")
    p.add_argument("--symprec", type=float, default=0.01, help="tolerance of the frame and projection (A)")
    p.add_argument("--no-ensemble", action="store_true", help="only the first member of an ensemble")
    p.add_argument("--out", required=True, help="JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    data = LmdbDataset(args.data)
    res: dict = {"checkpoint": args.checkpoint, "data": args.data, "structures": len(data), "symprec": args.symprec}
    for name, kw in SETTINGS.items():
        relaxer = Relaxer.from_checkpoint(args.checkpoint, ensemble=not args.no_ensemble, symprec=args.symprec, **kw)
        t0 = time.process_time()
        table = evaluate(relaxer, data, keep_structures=True, progress=None)
        res[name] = {**score(table.structures, table.references, table.ids, table.metrics),
                     "cpu_s": time.process_time() - t0}
        if "Dummy" not in res:
            res["Dummy"] = score(table.inputs, table.references, table.ids, table.dummy)
    print(f"{args.checkpoint} on {args.data} ({len(data)} structures)\n")
    print("| | coord. MAE (Å) | shape dev. (Å²) | volume MAE (Å³) | match strict | match loose | space group agree |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in ["Dummy", *SETTINGS]:
        r = res[name]
        print(f"| {name} | {r['mae_pos']:.4f} | {r['shape_dev']:.3f} | {r['mae_vol']:.3f} | "
              f"{100 * r['match_strict']:.1f}% | {100 * r['match_loose']:.1f}% | {100 * r['spg_match']:.1f}% |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
