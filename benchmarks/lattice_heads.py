"""Compare the DeepRelax lattice head with the equivariant lattice head on a PaiNN backbone.

For each head: the rotation error of the predicted cell (max |L_hat(Q x) - L_hat(x) Q^T|, float64),
before and after overfitting a handful of generated pairs, the overfit cell MAE, and the cell MAE
on randomly rotated copies of the same pairs (what a non-equivariant head pays for a frame change).

    python benchmarks/lattice_heads.py --pairs 6 --steps 300
"""
from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
from ase import Atoms
from torch_geometric.data import Batch

from e3relax import keys
from e3relax.records import make_record, record_to_data
from e3relax.registry import GRAPHS, MODELS

log = logging.getLogger("lattice_heads")


def make_pairs(num_pairs: int, seed: int) -> list:
    """Random triclinic crystals (3-6 atoms) and a strained, perturbed 'relaxed' partner."""
    rng = np.random.default_rng(seed)
    graph = GRAPHS.build({"name": "periodic_multi_edge", "backend": "numpy"})
    out = []
    for k in range(num_pairs):
        n = int(rng.integers(3, 7))
        cell = np.diag(4.0 + 1.5 * rng.random(3)) + 0.7 * (rng.random((3, 3)) - 0.5)
        frac = rng.random((n, 3))
        z = rng.choice(np.arange(1, 84), size=n, replace=False)
        cell_r = cell @ (np.eye(3) + 0.04 * rng.standard_normal((3, 3)))
        frac_r = frac + 0.03 * rng.standard_normal((n, 3))
        u = Atoms(numbers=z, scaled_positions=frac, cell=cell, pbc=True)
        r = Atoms(numbers=z, scaled_positions=frac_r % 1.0, cell=cell_r, pbc=True)
        record, _ = make_record(u, r, f"pair-{k}", graph, keep_frame=True)
        out.append(record_to_data(record, dtype=torch.float64))
    return out


def rotated(batch, q: torch.Tensor):
    b = batch.clone()
    for key in (keys.POS_U, keys.POS_R, keys.CELL_U, keys.CELL_R):
        b[key] = b[key] @ q.T
    return b


def random_rotation(gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def rotation_error(model, batch, q: torch.Tensor) -> float:
    with torch.no_grad():
        c1 = model(batch).final_cell
        c2 = model(rotated(batch, q)).final_cell
    return float((c2 - c1 @ q.T).abs().max())


def cell_mae(model, batch) -> float:
    with torch.no_grad():
        return float((model(batch).final_cell - batch[keys.CELL_R]).abs().mean())


def run(head: str, batch, steps: int, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    model = MODELS.build({"name": "painn", "hidden_channels": 32, "num_layers": 2, "num_rbf": 16,
                          "cutoff": 12.0, "lattice_head": head}).double()
    gen = torch.Generator().manual_seed(seed + 1)
    q = random_rotation(gen)
    row = {"rot_err_init": rotation_error(model, batch, q)}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        out = model(batch)
        loss = (torch.linalg.vector_norm(out.final_pos - batch[keys.POS_R], dim=-1).mean()
                + (out.final_cell - batch[keys.CELL_R]).abs().mean())
        loss.backward()
        opt.step()
    model.eval()
    row["rot_err_trained"] = rotation_error(model, batch, q)
    row["cell_mae_train"] = cell_mae(model, batch)
    row["cell_mae_rotated"] = float(np.mean([cell_mae(model, rotated(batch, random_rotation(gen))) for _ in range(5)]))
    row["params"] = sum(p.numel() for p in model.parameters())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    batch = Batch.from_data_list(make_pairs(args.pairs, args.seed))
    dummy = float((batch[keys.CELL_U] - batch[keys.CELL_R]).abs().mean())
    log.info("dummy cell MAE %.4f A over %d pairs", dummy, args.pairs)
    log.info("%-22s %12s %14s %14s %16s %8s", "head", "rot_err_init", "rot_err_trained", "cell_mae_train",
             "cell_mae_rotated", "params")
    for head in ("deeprelax_lattice", "equivariant_lattice"):
        r = run(head, batch, args.steps, args.seed)
        log.info("%-22s %12.2e %14.2e %14.4f %16.4f %8d", head, r["rot_err_init"], r["rot_err_trained"],
                 r["cell_mae_train"], r["cell_mae_rotated"], r["params"])


if __name__ == "__main__":
    main()
