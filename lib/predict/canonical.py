"""The frame a structure is predicted in: its primitive cell, in a reduced basis, with atom 0 at the origin.

The same crystal written in another lattice basis (``a' = a + b``), with another origin, or as a
supercell is the same input, but a model's self-image edges and lattice nodes are tied to the
basis it is given. :class:`CanonicalFrame` therefore builds, from the user's structure:

1. the primitive cell, when spglib finds one with fewer atoms at ``symprec`` and the user's cell is
   an integer multiple of it (a rattled supercell whose translations are broken is kept whole);
2. a reduced basis of that cell chosen without reference to the user's basis: among the right-handed
   bases whose vector lengths are the lattice's successive minima (found from spglib's Niggli cell),
   the one with the smallest metric, then the smallest wrapped fractional coordinates, compared in
   order with a tolerance;
3. atom 0 at the origin and fractional coordinates wrapped into [0, 1).

:meth:`CanonicalFrame.to_user` maps a prediction back into the user's basis, atom order and origin:
each atom's integer lattice shift and the fractional origin offset are applied in the *predicted*
cell (atoms ride the cell, as DFT relaxations in fractional coordinates do), and the user's cell is
the integer matrix ``M`` (user basis = ``M`` x reduced basis) times the predicted reduced cell.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CanonicalFrame", "reduced_bases"]

log = logging.getLogger(__name__)

#: relative tolerance on lengths and metrics, and absolute one on fractional coordinates, when
#: comparing candidate bases (only rounding noise must fall below it)
_TOL = 1e-6
_COEFFS = np.array([n for n in itertools.product(range(-2, 3), repeat=3) if any(n)], dtype=float)  # [124, 3]


def reduced_bases(cell: np.ndarray, tol: float = _TOL) -> np.ndarray:
    """Every right-handed basis of the lattice of ``cell`` whose sorted lengths are its successive minima.

    Shapes:
        cell: [3, 3] rows -> [K, 3, 3] bases (rows), K >= 1.

    Raises:
        ValueError: when spglib cannot reduce the cell (degenerate).
    """
    import spglib

    red = spglib.niggli_reduce(np.asarray(cell, dtype=float), eps=1e-5)
    if red is None:
        raise ValueError("spglib could not Niggli-reduce the cell (degenerate lattice?)")
    red = np.asarray(red)
    vecs = _COEFFS @ red  # [124, 3]
    lens = np.linalg.norm(vecs, axis=1)
    minima = np.sort(np.linalg.norm(red, axis=1))
    shells = [np.flatnonzero(np.abs(lens - m) <= tol * minima[-1]) for m in minima]
    idx = np.array(list(itertools.product(*shells)))  # [T, 3]
    coeff = _COEFFS[idx]  # [T, 3, 3]
    ok = np.abs(np.abs(np.linalg.det(coeff)) - 1) < 1e-6
    bases = vecs[idx[ok]]
    bases = bases[np.linalg.det(bases) > 0]
    if not len(bases):  # cannot happen for a lattice; keep the Niggli cell, right-handed
        bases = (red if np.linalg.det(red) > 0 else -red)[None]
    return bases


def _wrap(frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fractional coordinates in [-tol, 1 - tol) and the integer shifts taken off."""
    shift = np.floor(frac + _TOL)
    return frac - shift, shift


def _tolerant_argmin(keys: np.ndarray, tol: float) -> int:
    """Index of the lexicographically smallest row, differences below ``tol`` counting as ties."""
    best = 0
    for c in range(1, len(keys)):
        d = keys[c] - keys[best]
        big = np.flatnonzero(np.abs(d) > tol)
        if big.size and d[big[0]] < 0:
            best = c
    return best


def _choose_basis(bases: np.ndarray, rel: np.ndarray) -> int:
    """The candidate basis with the smallest (metric, wrapped fractional coordinates of ``rel``).

    Shapes:
        bases: [K, 3, 3]; rel: [M, 3] Cartesian positions relative to atom 0.
    """
    gram = bases @ bases.transpose(0, 2, 1)
    scale = gram[0, 0, 0]
    metric = np.stack([gram[:, 0, 0], gram[:, 1, 1], gram[:, 2, 2], gram[:, 1, 2], gram[:, 0, 2], gram[:, 0, 1]],
                      axis=1) / scale
    frac = _wrap(np.einsum("mi,kij->kmj", rel, np.linalg.inv(bases)))[0].reshape(len(bases), -1)
    return _tolerant_argmin(np.concatenate([metric, frac], axis=1), _TOL)


def _primitive(pos: np.ndarray, cell: np.ndarray, ds: Any, symprec: float):
    """``(prim_cell, index, reps, shifts)`` when spglib's dataset ``ds`` of the structure finds a
    smaller primitive cell whose multiple the cell is (at ``symprec``), else None.

    ``index[i]`` is the primitive atom of user atom ``i`` (primitive atoms in order of their first
    user atom ``reps[k]``), ``shifts[i]`` the integer lattice vector (in the primitive basis) from
    ``reps[index[i]]`` to atom ``i``, and ``cell = M prim_cell`` with ``M`` integral.
    """
    if ds is None:
        return None
    labels = np.asarray(ds.mapping_to_primitive)
    _, reps, inverse = np.unique(labels, return_index=True, return_inverse=True)
    if len(reps) == len(pos):
        return None
    order = np.argsort(reps)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    index, reps = rank[inverse.ravel()], reps[order]
    prim = np.asarray(ds.primitive_lattice, dtype=float)
    mult = cell @ np.linalg.inv(prim)
    mult_int = np.round(mult)
    if round(abs(np.linalg.det(mult_int))) * len(reps) != len(pos) or \
            np.linalg.norm((mult - mult_int) @ prim, axis=1).max() > symprec:
        return None
    prim = np.linalg.solve(mult_int, cell)  # exactly cell = M prim
    rel = np.linalg.solve(prim.T, (pos - pos[reps[index]]).T).T
    shifts = np.round(rel)
    if np.linalg.norm((rel - shifts) @ prim, axis=1).max() > 1.5 * symprec:
        return None
    return prim, index, reps, shifts


@dataclass
class CanonicalFrame:
    """A structure in its canonical frame and the way back to the user's.

    Shapes (M canonical atoms, N user atoms):
        positions: [M, 3] Cartesian, canonical (atom 0 at the origin, wrapped);
        cell: [3, 3] rows, the reduced (primitive) basis; numbers: [M]; pbc: [3];
        index: [N], the canonical atom of each user atom; shift: [N, 3] fractional offset of each
        user atom from its canonical atom, in the reduced basis (integer part + origin offset);
        supercell: [3, 3] integer, user cell = ``supercell @ cell``.
        ``identity`` marks a frame that is the user's structure itself.
    """

    positions: np.ndarray
    cell: np.ndarray
    numbers: np.ndarray
    pbc: np.ndarray
    index: np.ndarray
    shift: np.ndarray
    supercell: np.ndarray
    identity: bool = False

    @property
    def num_user_atoms(self) -> int:
        return len(self.index)

    @property
    def is_primitive_reduced(self) -> bool:
        return len(self.positions) < len(self.index)

    @classmethod
    def user(cls, pos: np.ndarray, cell: np.ndarray, numbers: np.ndarray, pbc: np.ndarray) -> "CanonicalFrame":
        """The user's own frame (no reduction): ``to_user`` returns its arguments."""
        n = len(pos)
        return cls(np.asarray(pos, float), np.asarray(cell, float), np.asarray(numbers), np.asarray(pbc, bool),
                   np.arange(n), np.zeros((n, 3)), np.eye(3), identity=True)

    @classmethod
    def from_structure(cls, pos: np.ndarray, cell: np.ndarray, numbers: np.ndarray, pbc: np.ndarray,
                       symprec: float, primitive: bool = True, dataset: Any = None) -> "CanonicalFrame":
        """The canonical frame of a structure (the user's own frame when it is not periodic in 3D).

        Args:
            pos, cell, numbers, pbc: the user's structure (Cartesian [N, 3], rows [3, 3], [N], [3]).
            symprec: tolerance (A) for finding a primitive cell.
            primitive: also reduce a supercell to its primitive cell.
            dataset: the structure's spglib dataset at ``symprec``, when already computed.
        """
        pos, cell, numbers = np.asarray(pos, float), np.asarray(cell, float), np.asarray(numbers)
        pbc = np.asarray(pbc, bool)
        if len(pos) == 0 or not pbc.all() or abs(np.linalg.det(cell)) < 1e-6:
            return cls.user(pos, cell, numbers, pbc)
        n = len(pos)
        if primitive and dataset is None:
            from e3relax.predict.symmetry import spglib_dataset

            dataset = spglib_dataset(pos, cell, numbers, symprec)
        prim = _primitive(pos, cell, dataset, symprec) if primitive else None
        base, index, reps, lattice_shift = prim if prim is not None else (cell, np.arange(n), np.arange(n),
                                                                         np.zeros((n, 3)))
        rel = pos[reps] - pos[0]  # primitive atoms relative to the origin atom (user atom 0 = reps[0])
        try:
            bases = reduced_bases(base)
        except ValueError:
            return cls.user(pos, cell, numbers, pbc)
        red = bases[_choose_basis(bases, rel)]
        to_red = np.round(base @ np.linalg.inv(red))  # base = to_red @ red, unimodular
        frac, wrap = _wrap(np.linalg.solve(red.T, rel.T).T)
        origin = np.linalg.solve(red.T, pos[0])  # fractional origin offset in the reduced basis
        shift = wrap[index] + lattice_shift @ to_red + origin
        supercell = np.round(cell @ np.linalg.inv(red))
        return cls(frac @ red, red, numbers[reps], pbc, index, shift, supercell)

    def to_user(self, pos: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A prediction in this frame, in the user's basis, atom order and origin.

        Shapes:
            pos: [M, 3], cell: [3, 3] (predicted, canonical frame) -> ([N, 3], [3, 3]).
        """
        if self.identity:
            return pos, cell
        return pos[self.index] + self.shift @ cell, self.supercell @ cell

    @property
    def representatives(self) -> np.ndarray:
        """``[M]``: the first user atom of each canonical atom."""
        return np.unique(self.index, return_index=True)[1]

    def to_frame(self, pos: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A structure given in the user's basis and atom order (a relaxed label, a trajectory
        frame) in this frame: the inverse of :meth:`to_user` (exact when the structure keeps the
        translations the primitive cell drops; else each canonical atom follows its first user atom).

        Shapes:
            pos: [N, 3], cell: [3, 3] -> ([M, 3], [3, 3]).
        """
        if self.identity:
            return pos, cell
        red = np.linalg.solve(self.supercell, cell)
        reps = self.representatives
        return pos[reps] - self.shift[reps] @ red, red

    def values_to_user(self, values: np.ndarray) -> np.ndarray:
        """Per-atom values of the canonical atoms, for each user atom. Shapes: [M, ...] -> [N, ...]."""
        return values if self.identity else values[self.index]
