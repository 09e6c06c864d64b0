"""Structure conversion, validation of (unrelaxed, relaxed) pairs, unwrapping and frame alignment.

Conventions: cells hold lattice vectors as ROWS (``cell[c, :] = l_c``), positions are Cartesian in
Angstrom, and fractional coordinates are ``pos @ inv(cell)``.

Public API:
    ``as_atoms`` / ``to_structure``: ASE Atoms <-> pymatgen Structure.
    ``validate_structure`` / ``validate_pair``: raise :class:`PairValidationError` for broken input,
    return warnings for unusual but kept input.
    ``min_periodic_distance``: shortest interatomic distance including periodic images.
    ``unwrap_positions``: relaxed positions moved to the image nearest each unrelaxed atom.
    ``remove_rigid_rotation``: strip the rigid rotation between unrelaxed and relaxed cells.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = [
    "PairValidationError",
    "ValidationThresholds",
    "as_atoms",
    "to_structure",
    "arrays_to_atoms",
    "structure_arrays",
    "min_periodic_distance",
    "validate_structure",
    "validate_pair",
    "unwrap_positions",
    "polar_rotation",
    "rotation_angle_deg",
    "remove_rigid_rotation",
]

logger = logging.getLogger(__name__)


class PairValidationError(ValueError):
    """A structure (or an unrelaxed/relaxed pair) that cannot be used.

    Attributes:
        sid: the structure id.
        code: machine-readable reason: ``atom_count``, ``species``, ``non_finite``,
            ``degenerate_cell``, ``coincident``, ``element``, ``handedness``, ``type`` (not an
            Atoms/Structure) or ``trajectory`` (malformed trajectory arrays).
        reason: human-readable explanation.
    """

    def __init__(self, sid: str, code: str, reason: str) -> None:
        self.sid = str(sid)
        self.code = code
        self.reason = reason
        super().__init__(f"structure '{self.sid}': {reason} [{code}]")


@dataclass(frozen=True)
class ValidationThresholds:
    """Limits used by :func:`validate_structure` and :func:`validate_pair`.

    Attributes:
        min_distance: periodic interatomic distance (A) below which atoms count as coincident
            (error ``coincident``).
        warn_distance: distance (A) below which a short but real contact is kept with a warning.
        min_volume: |det L| (A^3) below which the cell is degenerate (error ``degenerate_cell``).
        min_volume_ratio: |det L| / (|a||b||c|) below which the lattice vectors are practically
            coplanar (error ``degenerate_cell``); 1e-4 is a cell angle of about 0.006 degrees.
    """

    min_distance: float = 0.1
    warn_distance: float = 0.5
    min_volume: float = 1e-2
    min_volume_ratio: float = 1e-4


def as_atoms(x: Any):
    """Return an ``ase.Atoms`` for an ASE Atoms (copied) or a pymatgen ``Structure``.

    Raises:
        TypeError: for any other type, naming it.
    """
    from ase import Atoms

    if isinstance(x, Atoms):
        return x.copy()
    from pymatgen.core import Structure

    if isinstance(x, Structure):
        from pymatgen.io.ase import AseAtomsAdaptor

        if not x.is_ordered:
            raise TypeError("disordered pymatgen Structure (partial occupancies) cannot become ase.Atoms")
        return AseAtomsAdaptor.get_atoms(x)
    raise TypeError(f"expected ase.Atoms or pymatgen Structure, got {type(x).__name__}")


def to_structure(x: Any):
    """Return a pymatgen ``Structure`` for an ASE Atoms or a Structure (returned as is).

    Raises:
        TypeError: for any other type, naming it.
    """
    from pymatgen.core import Structure

    if isinstance(x, Structure):
        return x
    from ase import Atoms

    if isinstance(x, Atoms):
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_structure(x)
    raise TypeError(f"expected ase.Atoms or pymatgen Structure, got {type(x).__name__}")


def arrays_to_atoms(pos: np.ndarray, cell: np.ndarray, z: np.ndarray, pbc: Sequence[bool] = (True,) * 3):
    """Build ``ase.Atoms`` from arrays. Shapes: pos [N, 3], cell [3, 3], z [N]."""
    from ase import Atoms

    return Atoms(numbers=np.asarray(z), positions=np.asarray(pos, dtype=float), cell=np.asarray(cell, dtype=float),
                 pbc=np.asarray(pbc, dtype=bool))


def structure_arrays(x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(pos [N,3] f64, cell [3,3] f64, z [N] int64, pbc [3] bool)`` of an Atoms or Structure."""
    atoms = as_atoms(x)
    return (
        np.asarray(atoms.get_positions(), dtype=np.float64),
        np.asarray(atoms.cell.array, dtype=np.float64),
        np.asarray(atoms.numbers, dtype=np.int64),
        np.asarray(atoms.pbc, dtype=bool).reshape(3),
    )


def min_periodic_distance(pos: np.ndarray, cell: np.ndarray, pbc: Sequence[bool], cutoff: float) -> float:
    """Shortest distance between two atoms, or an atom and its own image, up to ``cutoff``.

    Images along periodic axes are included (a one-atom cell gives the distance to its own
    nearest image). Returns ``inf`` when no pair lies within ``cutoff``.

    Shapes: pos [N, 3], cell [3, 3], pbc [3].
    """
    from vesin import NeighborList

    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    pos = np.ascontiguousarray(pos, dtype=np.float64)
    if len(pos) == 0:
        return math.inf
    nl = NeighborList(cutoff=float(cutoff), full_list=False)
    (dist,) = nl.compute(pos, np.ascontiguousarray(cell, dtype=np.float64), pbc.tolist(), quantities="d")
    return float(dist.min()) if dist.size else math.inf


def _check_arrays(pos, cell, z, pbc, sid: str, label: str, th: ValidationThresholds) -> list[str]:
    """Checks of one structure's arrays; raises PairValidationError, returns warnings."""
    if len(z) == 0:
        raise PairValidationError(sid, "atom_count", f"{label} structure has no atoms")
    bad = (z < 1) | (z > 118)
    if bad.any():
        raise PairValidationError(
            sid, "element", f"{label} structure has atomic number(s) {sorted(set(z[bad].tolist()))} outside 1..118")
    if not (np.isfinite(pos).all() and np.isfinite(cell).all()):
        raise PairValidationError(sid, "non_finite", f"{label} structure has non-finite positions or cell")
    det = float(np.linalg.det(cell))
    norms = float(np.prod(np.linalg.norm(cell, axis=1)))
    if abs(det) < th.min_volume or abs(det) < th.min_volume_ratio * norms:
        raise PairValidationError(
            sid, "degenerate_cell", f"{label} cell volume |det L| = {abs(det):.3g} A^3 is (near) zero")
    warnings: list[str] = []
    dmin = min_periodic_distance(pos, cell, pbc, max(th.warn_distance, th.min_distance))
    if dmin < th.min_distance:
        raise PairValidationError(
            sid, "coincident", f"{label} structure has atoms {dmin:.3g} A apart (< {th.min_distance} A)")
    if dmin < th.warn_distance:
        warnings.append(f"structure '{sid}': {label} shortest interatomic distance {dmin:.3f} A "
                        f"(< {th.warn_distance} A), kept")
    return warnings


def validate_structure(x: Any, sid: str, thresholds: ValidationThresholds | None = None,
                       label: str = "input") -> list[str]:
    """Validate one structure (prediction-only input).

    Checks: at least one atom and atomic numbers in 1..118 (``element``), finite positions and
    cell (``non_finite``), |det L| not near zero (``degenerate_cell``), no practically coincident
    atoms including periodic images (``coincident``). Left-handed cells (det L < 0) are valid and
    kept as they are; metrics use signed determinants.

    Returns:
        Warnings (short contacts above ``min_distance`` but below ``warn_distance``).

    Raises:
        PairValidationError: naming ``sid`` and the reason.
    """
    th = thresholds or ValidationThresholds()
    try:
        pos, cell, z, pbc = structure_arrays(x)
    except TypeError as exc:
        raise PairValidationError(sid, "type", f"{label}: {exc}") from exc
    return _check_arrays(pos, cell, z, pbc, sid, label, th)


def validate_pair(unrelaxed: Any, relaxed: Any, sid: str,
                  thresholds: ValidationThresholds | None = None) -> list[str]:
    """Validate an (unrelaxed, relaxed) pair.

    On top of :func:`validate_structure` for each: equal atom counts (``atom_count``), identical
    species sequence, atom by atom (``species``; there is no atom matching, order must agree), and
    the same handedness sign of det L in both cells (``handedness``: a relaxation cannot reflect a
    cell, and a reflection cannot be removed as a rigid rotation).

    Returns:
        Warnings for short contacts.

    Raises:
        PairValidationError: naming ``sid`` and the reason.
    """
    th = thresholds or ValidationThresholds()
    try:
        pos_u, cell_u, z_u, pbc_u = structure_arrays(unrelaxed)
        pos_r, cell_r, z_r, pbc_r = structure_arrays(relaxed)
    except TypeError as exc:
        raise PairValidationError(sid, "type", str(exc)) from exc
    if len(z_u) != len(z_r):
        raise PairValidationError(sid, "atom_count", f"unrelaxed has {len(z_u)} atoms, relaxed has {len(z_r)}")
    if not np.array_equal(z_u, z_r):
        i = int(np.flatnonzero(z_u != z_r)[0])
        raise PairValidationError(
            sid, "species", f"species sequences differ, first at atom {i}: unrelaxed Z={z_u[i]}, relaxed Z={z_r[i]}")
    warnings = _check_arrays(pos_u, cell_u, z_u, pbc_u, sid, "unrelaxed", th)
    warnings += _check_arrays(pos_r, cell_r, z_r, pbc_r, sid, "relaxed", th)
    if np.sign(np.linalg.det(cell_u)) != np.sign(np.linalg.det(cell_r)):
        raise PairValidationError(sid, "handedness", "unrelaxed and relaxed cells have opposite handedness "
                                  "(sign of det L); reorder the relaxed lattice vectors")
    if not np.array_equal(pbc_u, pbc_r):
        warnings.append(f"structure '{sid}': pbc differs (unrelaxed {pbc_u.tolist()}, relaxed {pbc_r.tolist()}); "
                        "the unrelaxed pbc is used")
    return warnings


def unwrap_positions(pos_u: np.ndarray, pos_r: np.ndarray, cell_r: np.ndarray,
                     pbc: Sequence[bool] = (True, True, True), chunk: int = 4096) -> np.ndarray:
    """Move each relaxed atom to the periodic image (of ``cell_r``) nearest its unrelaxed position.

    Exact for any shift and any cell skew: the fractional difference is rounded (which handles
    atoms that moved by several cells), then every integer image within a provable bound of the
    rounded one is checked (at least the 27 neighbouring images). Only periodic axes are shifted.

    Shapes:
        pos_u: [N, 3]; pos_r: [N, 3]; cell_r: [3, 3]  ->  [N, 3] = pos_r + k @ cell_r, k integer.
    """
    pos_u = np.asarray(pos_u, dtype=np.float64)
    pos_r = np.asarray(pos_r, dtype=np.float64)
    cell_r = np.asarray(cell_r, dtype=np.float64)
    per = np.asarray(pbc, dtype=bool).reshape(3)
    inv = np.linalg.inv(cell_r)
    k0 = np.rint((pos_u - pos_r) @ inv) * per
    d0 = np.linalg.norm(pos_r + k0 @ cell_r - pos_u, axis=1)
    # |k*_c - f_c| <= |(k*-f) L| * |inv[:, c]| <= d0 * |inv[:, c]|, and |k0_c - f_c| <= 1/2
    reach = np.floor(d0.max(initial=0.0) * np.linalg.norm(inv, axis=0) + 0.5 + 1e-9).astype(int)
    reach = np.minimum(np.maximum(reach, 1), 20) * per  # the cap only matters for absurd cells
    grid = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in reach], indexing="ij"), -1).reshape(-1, 3)
    out = np.empty_like(pos_r)
    for s in range(0, len(pos_r), chunk):
        k = k0[s:s + chunk, None, :] + grid[None]  # [n, G, 3]
        cand = pos_r[s:s + chunk, None, :] + k @ cell_r
        best = np.linalg.norm(cand - pos_u[s:s + chunk, None, :], axis=-1).argmin(axis=1)
        out[s:s + chunk] = cand[np.arange(len(best)), best]
    return out


def polar_rotation(cell_u: np.ndarray, cell_r: np.ndarray) -> np.ndarray:
    """Rotation R of the left polar decomposition ``F = S R`` with ``cell_r = cell_u @ F``.

    S is symmetric positive definite (the pure strain), R a proper rotation, both from the SVD
    ``F = U diag(s) V^T``: ``R = U V^T``, ``S = U diag(s) U^T``.

    Raises:
        ValueError: if det F <= 0 (the cells have opposite handedness).
    """
    f = np.linalg.solve(np.asarray(cell_u, dtype=np.float64), np.asarray(cell_r, dtype=np.float64))
    u, _s, vt = np.linalg.svd(f)
    r = u @ vt
    if np.linalg.det(f) <= 0 or np.linalg.det(r) < 0:
        raise ValueError("cell deformation has det F <= 0: unrelaxed and relaxed cells differ in handedness")
    return r


def rotation_angle_deg(r: np.ndarray) -> float:
    """Rotation angle of a proper rotation matrix, in degrees (accurate for small angles)."""
    # ||R - I||_F^2 = 8 sin^2(theta / 2)
    x = np.linalg.norm(np.asarray(r) - np.eye(3)) / (2.0 * math.sqrt(2.0))
    return math.degrees(2.0 * math.asin(min(1.0, x)))


def remove_rigid_rotation(cell_u: np.ndarray, cell_r: np.ndarray,
                          pos_r: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Express a relaxed structure in the unrelaxed frame without rigid rotation.

    With rows as lattice vectors, ``L_r = L_u F`` and ``F = S R`` (left polar decomposition, see
    :func:`polar_rotation`). The de-rotated cell is ``L_u S = L_r R^T``; positions are rotated
    alike, ``pos_r R^T``, so fractional coordinates, distances, cell shape (Gram matrix) and
    volume are unchanged. The rotation is about the Cartesian origin.

    Shapes:
        cell_u: [3, 3]; cell_r: [3, 3]; pos_r: [N, 3]  ->  (cell [3, 3], pos [N, 3], angle in degrees)
    """
    r = polar_rotation(cell_u, cell_r)
    cell_r = np.asarray(cell_r, dtype=np.float64)
    pos_r = np.asarray(pos_r, dtype=np.float64)
    return cell_r @ r.T, pos_r @ r.T, rotation_angle_deg(r)
