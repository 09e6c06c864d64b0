"""Projection of a prediction onto the space group of its input.

A DFT relaxation with symmetry on (VASP's ISYM) or an ML-potential relaxation under ASE's
``FixSymmetry`` keeps the input's space group. A one-shot prediction does not by itself, so each
predicted layer is averaged over the input's symmetry operations, found by spglib at ``symprec``:

- cell: with rows as lattice vectors and integer rotations ``W`` acting on column fractional
  coordinates, the metric ``G = L_hat L_hat^T`` is averaged as ``G_sym = mean_g W_g^T G W_g``; the
  symmetric cell is the one with metric ``G_sym`` reached from the input cell ``L`` without a rigid
  rotation: ``L_sym = L P`` with ``P`` symmetric positive definite, ``P^2 = L^-1 G_sym L^-T`` (the
  polar convention the relaxed labels are stored in). It commutes with rotating the input, keeps
  the handedness of the cell, and, unlike the nearest cell of that metric, is itself invariant
  under every rotation of the space group, so two bases of the input related by one of its
  symmetries give the same answer;
- positions: the fractional displacement ``d_i = x_hat_i - x_i`` (``x_hat`` in the predicted cell,
  ``x`` in the input cell, no wrapping) is averaged as ``d_sym[p_g(i)] += W_g d_i / |G|``, where
  ``p_g(i)`` is the atom onto which op ``g`` maps atom ``i`` (the scatter form of ASE's
  ``symmetrize_rank1``); the output is ``x + d_sym`` in the symmetric cell.

Both averages are linear and exact for any deformation, so the projection is idempotent. A
structure whose only operation is the identity is returned as it is (the same arrays).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from e3relax.errors import InputError

__all__ = ["DEFAULT_SYMPREC", "SymmetryOps", "check_symprec", "spglib_dataset", "find_operations", "symmetric_cell",
           "project"]

log = logging.getLogger(__name__)

#: default symmetry tolerance (A), as ASE's ``FixSymmetry`` and pymatgen's ``SpacegroupAnalyzer``
DEFAULT_SYMPREC = 0.01


def check_symprec(symprec: float, what: str = "symprec") -> float:
    """``symprec`` as a float; an :class:`~e3relax.errors.InputError` naming it when it is not > 0."""
    try:
        value = float(symprec)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a positive number of Angstrom, got {symprec!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"{what} must be a positive number of Angstrom (e.g. {DEFAULT_SYMPREC}), got {symprec!r}")
    return value


@dataclass
class SymmetryOps:
    """Space-group operations of one structure and the atom map of each.

    Shapes:
        rotations: [G, 3, 3] integer, acting on column fractional coordinates (``x' = W x + w``);
        translations: [G, 3]; perm: [G, N], ``perm[g, i]`` = the atom onto which op ``g`` maps atom ``i``.
    """

    rotations: np.ndarray
    translations: np.ndarray
    perm: np.ndarray
    international: str = "P1"

    @property
    def trivial(self) -> bool:
        """Only the identity: projecting changes nothing."""
        return len(self.rotations) <= 1

    @classmethod
    def identity(cls, num_atoms: int) -> "SymmetryOps":
        return cls(np.eye(3, dtype=int)[None], np.zeros((1, 3)), np.arange(num_atoms)[None], "P1")


def _atom_maps(frac: np.ndarray, cell: np.ndarray, numbers: np.ndarray, rotations: np.ndarray,
               translations: np.ndarray, symprec: float) -> np.ndarray | None:
    """``perm[g, i]``: the atom nearest to the image of atom ``i`` under op ``g`` (same species);
    None when some image is farther than ``symprec`` from every atom or two atoms map onto one.

    Shapes:
        frac: [N, 3], cell: [3, 3], numbers: [N], rotations: [G, 3, 3], translations: [G, 3] -> [G, N].
    """
    n = len(frac)
    other = numbers[:, None] != numbers[None, :]
    perm = np.empty((len(rotations), n), dtype=np.int64)
    chunk = max(1, 200_000 // (n * n))
    for start in range(0, len(rotations), chunk):
        sl = slice(start, start + chunk)
        image = np.einsum("gij,nj->gni", rotations[sl], frac) + translations[sl, None, :]  # [g, N, 3]
        diff = frac[None, None, :, :] - image[:, :, None, :]  # [g, N(image of i), N(atom j), 3]
        diff -= np.round(diff)
        dist = np.linalg.norm(diff @ cell, axis=-1)
        dist[:, other] = np.inf
        best = np.argmin(dist, axis=2)
        if np.take_along_axis(dist, best[..., None], axis=2).max() > 1.5 * symprec:
            return None
        perm[sl] = best
    if np.any(np.sort(perm, axis=1) != np.arange(n)):  # two atoms onto one
        return None
    return perm


def spglib_dataset(pos: np.ndarray, cell: np.ndarray, numbers: np.ndarray, symprec: float = DEFAULT_SYMPREC,
                   name: str = "structure") -> Any:
    """spglib's symmetry dataset of a structure at ``symprec`` (A), or None (logged) when it fails.

    Shapes:
        pos: [N, 3] Cartesian, cell: [3, 3] rows, numbers: [N].
    """
    import spglib

    frac = np.linalg.solve(cell.T, pos.T).T
    try:
        return spglib.get_symmetry_dataset((cell, frac, numbers), symprec=symprec)
    except Exception as exc:  # noqa: BLE001 - spglib raises its own error types
        log.warning("%s: spglib failed (%s); predicting without symmetry", name, exc)
        return None


def find_operations(pos: np.ndarray, cell: np.ndarray, numbers: np.ndarray, symprec: float = DEFAULT_SYMPREC,
                    name: str = "structure", dataset: Any = None) -> SymmetryOps:
    """The spglib operations of a structure at ``symprec`` (A) with their atom maps.

    A structure spglib cannot analyse, or whose operations do not map atoms onto atoms within
    ``symprec``, gets the identity only (logged), so it is predicted without projection.

    Args:
        pos, cell, numbers: the structure (Cartesian [N, 3], rows [3, 3], [N]).
        symprec, name: tolerance (A) and how logs name the structure.
        dataset: its :func:`spglib_dataset`, when already computed.
    """
    ds = dataset if dataset is not None else spglib_dataset(pos, cell, numbers, symprec, name)
    if ds is None or len(ds.rotations) <= 1:
        return SymmetryOps.identity(len(pos))
    rot, trans = np.asarray(ds.rotations, dtype=int), np.asarray(ds.translations, dtype=float)
    frac = np.linalg.solve(cell.T, pos.T).T
    perm = _atom_maps(frac, cell, np.asarray(numbers), rot, trans, symprec)
    if perm is None:
        log.warning("%s: spglib's operations (%s) do not map atoms onto atoms within symprec %g A; "
                    "predicting without symmetry projection", name, ds.international, symprec)
        return SymmetryOps.identity(len(pos))
    return SymmetryOps(rot, trans, perm, str(ds.international))


def symmetric_cell(cell: np.ndarray, rotations: np.ndarray, cell_u: np.ndarray) -> np.ndarray:
    """The cell ``cell_u P`` (``P`` symmetric positive definite) whose metric is the average of the
    predicted ``cell``'s metric over ``rotations``.

    Shapes:
        cell: [3, 3] rows (the prediction), rotations: [G, 3, 3], cell_u: [3, 3] (the input) -> [3, 3].
    """
    w = rotations.astype(float)
    gram = cell @ cell.T
    g_sym = np.einsum("gji,jk,gkl->il", w, gram, w) / len(w)  # mean of W^T G W
    inv_u = np.linalg.inv(cell_u)
    p2 = inv_u @ g_sym @ inv_u.T
    vals, vecs = np.linalg.eigh(0.5 * (p2 + p2.T))
    return cell_u @ ((vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T)


def project(ops: SymmetryOps, pos_u: np.ndarray, cell_u: np.ndarray, pos: np.ndarray,
            cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project one predicted layer ``(pos, cell)`` of the input ``(pos_u, cell_u)`` onto ``ops``.

    Returns ``(pos, cell)`` themselves when ``ops`` is only the identity.

    Shapes:
        pos_u, pos: [N, 3] Cartesian; cell_u, cell: [3, 3] rows -> ([N, 3], [3, 3]).
    """
    if ops.trivial:
        return pos, cell
    cell_sym = symmetric_cell(cell, ops.rotations, cell_u)
    frac_u = np.linalg.solve(cell_u.T, pos_u.T).T
    disp = np.linalg.solve(cell.T, pos.T).T - frac_u  # fractional displacement, not wrapped
    acc = np.zeros_like(disp)
    for w, p in zip(ops.rotations, ops.perm):
        acc[p] += disp @ w.T  # p is a permutation: no repeated index
    return (frac_u + acc / len(ops.rotations)) @ cell_sym, cell_sym
