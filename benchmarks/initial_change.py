"""How far each model moves its input at initialisation: largest position and cell change over all layers.

    python benchmarks/initial_change.py --data data/pnictides/val.lmdb --structures 16 --seeds 2

Prints a markdown table (model, width, max position change in A, max cell change in A and relative);
docs/models_e3relax.md quotes it for ``paper_faithful`` (the reference's initialisation) and the default.
"""
from __future__ import annotations

import argparse

import torch

from e3relax.datasets.reader import LmdbDataset
from e3relax.records import collate
from e3relax.registry import MODELS
from e3relax.testing.identity import initial_change

CASES = {"e3relax": {}, "e3relax[paper_faithful]": {"paper_faithful": True}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a converted .lmdb split")
    ap.add_argument("--structures", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128, 512])
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = LmdbDataset(args.data, dtype=torch.float64)
    batch = collate([ds[k] for k in range(min(args.structures, len(ds)))])
    cell = batch["cell_u"].reshape(-1, 3, 3)
    print("| model | hidden_channels (num_rbf) | max position change (A) | max cell change (A) | relative |")
    print("|---|---|---|---|---|")
    for case, extra in CASES.items():
        for width in args.widths:
            rbf = 16 if width < 128 else 64
            worst = (0.0, 0.0)
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                model = MODELS.build({"name": "e3relax", "hidden_channels": width, "num_layers": 4, "num_rbf": rbf,
                                      **extra}).double()
                dpos, dcell = initial_change(model, batch)
                worst = (max(worst[0], dpos), max(worst[1], dcell))
            absolute = worst[1] * float(cell.abs().amax())
            print(f"| {case} | {width} ({rbf}) | {worst[0]:.2g} | <= {absolute:.2g} | {worst[1]:.2g} |")


if __name__ == "__main__":
    main()
