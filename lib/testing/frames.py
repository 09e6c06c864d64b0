"""Laws of the choice of cell, checked on a whole prediction (a :class:`~e3relax.predict.Relaxer`).

The same crystal written in another lattice basis or with another origin is the same input:

- basis: the cell ``T L`` (``T`` integer, ``det T = +-1``) with the same Cartesian positions must give
  the same positions and the cell ``T L_hat``;
- origin: positions ``r + t`` must give ``r_hat + t L^-1 L_hat`` (the shift rides the predicted cell,
  as a relaxation in fractional coordinates does) and the same cell.

:func:`frame_law_errors` returns the largest deviation of each law, in Angstrom.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FRAME_LAWS", "A_PLUS_B", "random_unimodular", "change_basis", "shift_origin", "frame_law_errors",
           "relax_arrays"]

#: the laws :func:`frame_law_errors` checks
FRAME_LAWS = ("basis_a+b", "basis_unimodular", "origin")
#: a' = a + b
A_PLUS_B = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]])


def random_unimodular(seed: int, steps: int = 6) -> np.ndarray:
    """A seeded random integer 3x3 matrix with determinant +-1 (products of elementary row operations,
    one row sign flip at the end, so the handedness changes too).

    Shapes: -> [3, 3] int.
    """
    rng = np.random.default_rng(seed)
    t = np.eye(3, dtype=int)
    for _ in range(steps):
        i, j = rng.choice(3, size=2, replace=False)
        t[i] += int(rng.choice([-1, 1])) * t[j]
    t[int(rng.integers(3))] *= -1
    return t


def change_basis(atoms: Any, t: np.ndarray) -> Any:
    """``atoms`` with the lattice basis ``t @ cell`` (same lattice, same Cartesian positions)."""
    out = atoms.copy()
    out.set_cell(np.asarray(t) @ atoms.cell.array, scale_atoms=False)
    return out


def shift_origin(atoms: Any, shift: np.ndarray) -> Any:
    """``atoms`` with every position moved by the Cartesian vector ``shift``."""
    out = atoms.copy()
    out.positions = atoms.positions + np.asarray(shift)
    return out


def relax_arrays(relaxer: Any, atoms: Any) -> tuple[np.ndarray, np.ndarray]:
    """Predicted positions [N, 3] and cell [3, 3] of ``atoms``."""
    out = relaxer.relax(atoms)["final_structure"]
    return out.get_positions(), out.cell.array.copy()


def frame_law_errors(relaxer: Any, atoms: Any, seed: int = 0) -> dict[str, float]:
    """Largest deviation (A) of positions and cell from each law of :data:`FRAME_LAWS`."""
    pos, cell = relax_arrays(relaxer, atoms)
    errors = {}
    for name, t in (("basis_a+b", A_PLUS_B), ("basis_unimodular", random_unimodular(seed))):
        p2, c2 = relax_arrays(relaxer, change_basis(atoms, t))
        errors[name] = max(float(np.abs(p2 - pos).max()), float(np.abs(c2 - t @ cell).max()))
    shift = np.random.default_rng(seed + 1).uniform(-3, 3, size=3)
    p2, c2 = relax_arrays(relaxer, shift_origin(atoms, shift))
    want = pos + shift @ np.linalg.solve(atoms.cell.array, cell)
    errors["origin"] = max(float(np.abs(p2 - want).max()), float(np.abs(c2 - cell).max()))
    return errors
