"""Geometry helpers of the predictor: non-periodic (vacuum) directions, contacts, sanity flags,
non-finite predictions.

A 2D material is given either with ``pbc`` False along its out-of-plane direction or as a fully
periodic cell with a vacuum gap. The model was trained on bulk crystals and predicts a strain for
every lattice vector; along a vacuum direction that strain is meaningless, so by default
:func:`keep_vacuum` restores the input's vacuum vector(s) and keeps the periodic vectors in the
input's periodic subspace, with the atoms at their predicted fractional coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["vacuum_directions", "keep_vacuum", "min_distance", "close_contacts", "SanityLimits",
           "sanity_flags", "restore_nonfinite"]


def _normal_to_others(cell: np.ndarray, k: int) -> np.ndarray:
    """Unit normal of the plane spanned by the two lattice vectors other than ``k``."""
    a, b = cell[(k + 1) % 3], cell[(k + 2) % 3]
    n = np.cross(a, b)
    return n / np.linalg.norm(n)


def vacuum_directions(pos: np.ndarray, cell: np.ndarray, pbc: Sequence[bool],
                      threshold: float | None = 7.0) -> np.ndarray:
    """Lattice directions that are not periodic: ``pbc`` False, or an empty gap wider than ``threshold``.

    The gap along direction ``k`` is the widest empty slab, measured along the normal of the
    plane of the two other lattice vectors, between consecutive atom layers (periodically).

    Args:
        pos: [N, 3] Cartesian positions.
        cell: [3, 3] lattice vectors as rows.
        pbc: [3] periodic flags.
        threshold: gap width (Angstrom) that counts as vacuum; None: only ``pbc`` False counts.

    Returns:
        [3] bool, True for a non-periodic (vacuum) direction.
    """
    out = ~np.asarray(pbc, dtype=bool).reshape(3)
    if threshold is None or len(pos) == 0:
        return out
    frac = np.linalg.solve(cell.T, np.asarray(pos, dtype=np.float64).T).T  # [N, 3]
    for k in range(3):
        if out[k]:
            continue
        height = abs(float(cell[k] @ _normal_to_others(cell, k)))  # slab period along the normal
        f = np.sort(np.mod(frac[:, k], 1.0))
        gaps = np.diff(np.concatenate([f, f[:1] + 1.0]))
        out[k] = float(gaps.max()) * height > threshold
    return out


def keep_vacuum(pos_pred: np.ndarray, cell_pred: np.ndarray, cell_in: np.ndarray,
                vacuum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undo the predicted deformation of vacuum directions.

    The new cell takes the input's vectors along vacuum directions; periodic vectors are the
    predicted ones projected onto the span of the input's periodic vectors (a 2D sheet stays in
    its plane). Atoms keep their fractional coordinates in the predicted cell, so the predicted
    in-plane strain and the non-affine displacements are kept and the stretch along the vacuum is
    removed.

    Shapes: pos_pred [N, 3], cell_pred / cell_in [3, 3], vacuum [3] bool -> ([N, 3], [3, 3]).
    """
    vacuum = np.asarray(vacuum, dtype=bool).reshape(3)
    if not vacuum.any():
        return pos_pred, cell_pred
    frac = np.linalg.solve(cell_pred.T, pos_pred.T).T
    new = np.array(cell_pred, dtype=np.float64, copy=True)
    periodic = np.flatnonzero(~vacuum)
    if len(periodic):
        basis, _ = np.linalg.qr(cell_in[periodic].T)  # [3, p] orthonormal basis of the periodic span
        new[periodic] = cell_pred[periodic] @ basis @ basis.T
    new[vacuum] = cell_in[vacuum]
    return frac @ new, new


def _pair_distances(pos: np.ndarray, cell: np.ndarray, pbc: Sequence[bool], cutoff: float):
    """``(i, j, d)`` of every pair closer than ``cutoff`` (both orders), images included."""
    import vesin

    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, d = nl.compute(np.asarray(pos, dtype=np.float64), np.asarray(cell, dtype=np.float64),
                         np.asarray(pbc, dtype=bool).reshape(3), quantities="ijd")
    return np.asarray(i), np.asarray(j), np.asarray(d)


def min_distance(pos: np.ndarray, cell: np.ndarray, pbc: Sequence[bool], cutoff: float = 8.0) -> float:
    """Shortest interatomic distance (an atom's own periodic images included); inf if none within ``cutoff``."""
    for c in (min(4.0, cutoff), cutoff):  # a short search first: most structures have a contact below 4 A
        _, _, d = _pair_distances(pos, cell, pbc, c)
        if len(d):
            return float(d.min())
    return float("inf")


def close_contacts(pos: np.ndarray, cell: np.ndarray, pbc: Sequence[bool], z: np.ndarray,
                   factor: float = 0.6) -> int:
    """Number of atom pairs closer than ``factor`` times the sum of their covalent radii."""
    from ase.data import covalent_radii

    r = covalent_radii[np.asarray(z)]
    i, j, d = _pair_distances(pos, cell, pbc, float(2.0 * factor * r.max()) + 1e-6)
    return int((d < factor * (r[i] + r[j])).sum() // 2)


@dataclass
class SanityLimits:
    """When a prediction is flagged as unphysical.

    Attributes:
        contact_factor: atoms closer than this times the sum of covalent radii are "too close".
        volume_ratio: allowed range of predicted / input volume (the training range, widened).
        uncertainty: ensemble spread (Angstrom) above which a prediction is flagged "uncertain";
            None: never.
    """

    contact_factor: float = 0.6
    volume_ratio: tuple[float, float] = (0.5, 2.5)
    uncertainty: float | None = None


def sanity_flags(num_close: int, volume_ratio: float, uncertainty: float | None,
                 limits: SanityLimits) -> list[str]:
    """Names of the checks a prediction fails (empty: looks physical)."""
    flags = []
    if num_close > 0:
        flags.append("atoms_too_close")
    lo, hi = limits.volume_ratio
    if not (lo <= volume_ratio <= hi) or not np.isfinite(volume_ratio):
        flags.append("volume_out_of_range")
    if limits.uncertainty is not None and uncertainty is not None and uncertainty > limits.uncertainty:
        flags.append("uncertain")
    return flags


def restore_nonfinite(pos: list, cell: list, pos_in, cell_in, batch) -> tuple[list, list, "torch.Tensor"]:
    """Find the structures whose prediction holds a NaN or an infinity in any layer (a model that
    diverged on them) and put their input back in every layer, so that no NaN reaches a user or a
    mean over structures.

    Shapes: pos T x [N, 3], cell T x [B, 3, 3], pos_in [N, 3], cell_in [B, 3, 3], batch [N] ->
    (pos T x [N, 3], cell T x [B, 3, 3], bad [B] bool).
    """
    import torch

    nb = cell[-1].shape[0]
    bad = torch.zeros(nb, dtype=torch.bool, device=cell[-1].device)
    for p, c in zip(pos, cell):
        atom_bad = (~torch.isfinite(p).all(-1)).long()
        bad |= torch.zeros(nb, dtype=torch.long, device=p.device).index_add_(0, batch, atom_bad) > 0
        bad |= ~torch.isfinite(c.reshape(nb, 9)).all(-1)
    if bool(bad.any()):
        atom_mask = bad[batch][:, None]
        pos = [torch.where(atom_mask, pos_in.to(p.dtype), p) for p in pos]
        cell = [torch.where(bad[:, None, None], cell_in.reshape(nb, 3, 3).to(c.dtype), c) for c in cell]
    return pos, cell, bad
