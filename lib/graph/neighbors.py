"""Radius neighbour search over periodic images, nearest-K selection and self-image offsets.

All functions work on one structure given as numpy arrays: ``pos [N, 3]`` Cartesian positions,
``cell [3, 3]`` with lattice vectors as rows and ``pbc [3]`` booleans. A neighbour (j, k) of
centre i sits at ``pos[j] + k @ cell`` and has the vector ``r_ij = pos[j] + k @ cell - pos[i]``.
Positions need not be wrapped into the cell; offsets always refer to the positions as given.
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Literal

import numpy as np

Backend = Literal["pymatgen", "vesin", "numpy"]
SelfImageMode = Literal["positive", "symmetric", "none"]

#: The six positive self-image offsets of the reference code (Matformer-style), in its order.
POSITIVE_SELF_OFFSETS = np.array(
    [[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=np.int64
)

_PAIR_BUDGET = 2_000_000  # pair-image candidates held in memory at once by the numpy backend


def check_structure(pos: np.ndarray, cell: np.ndarray, pbc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and convert one structure to float64 / bool arrays.

    Args:
        pos: [N, 3] Cartesian positions.
        cell: [3, 3] lattice vectors as rows.
        pbc: [3] periodic flags (a single bool applies to all three directions).

    Returns:
        ``(pos, cell, pbc)`` as contiguous float64, float64 and bool arrays.

    Raises:
        ValueError: naming the field (``pos``, ``cell`` or ``pbc``) and what is wrong with it.
    """
    pos = np.ascontiguousarray(pos, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    pbc_arr = np.asarray(pbc, dtype=bool)
    if pbc_arr.ndim == 0:
        pbc_arr = np.repeat(pbc_arr, 3)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos must have shape [N, 3], got {list(pos.shape)}")
    if cell.shape == (1, 3, 3):
        cell = cell[0]
    if cell.shape != (3, 3):
        raise ValueError(f"cell must have shape [3, 3] (rows = lattice vectors), got {list(cell.shape)}")
    if pbc_arr.shape != (3,):
        raise ValueError(f"pbc must have 3 entries, got shape {list(pbc_arr.shape)}")
    if not np.isfinite(pos).all():
        raise ValueError("pos contains NaN or infinite values")
    if not np.isfinite(cell).all():
        raise ValueError("cell contains NaN or infinite values")
    if not _periodic_rows_independent(cell, pbc_arr):
        raise ValueError(
            f"cell is degenerate along the periodic directions {np.flatnonzero(pbc_arr).tolist()}: "
            "the periodic lattice vectors must be linearly independent and non-zero"
        )
    return pos, cell, pbc_arr


def _periodic_rows_independent(cell: np.ndarray, pbc: np.ndarray) -> bool:
    """Whether the periodic lattice vectors span a non-degenerate lattice (Gram determinant test)."""
    rows = cell[pbc].tolist()
    if not rows:
        return True
    if len(rows) == 3:  # scalar triple product against the product of lengths, in plain floats
        (a1, a2, a3), (b1, b2, b3), (c1, c2, c3) = rows
        vol = a1 * (b2 * c3 - b3 * c2) - a2 * (b1 * c3 - b3 * c1) + a3 * (b1 * c2 - b2 * c1)
        lengths = math.prod(math.sqrt(x * x + y * y + z * z) for x, y, z in rows)
        return bool(abs(vol) > 1e-6 * lengths)
    gram = cell[pbc] @ cell[pbc].T
    return bool(np.linalg.det(gram) > 1e-12 * np.prod(np.diag(gram)))


def complete_cell(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Cell whose non-periodic rows are replaced by unit vectors orthogonal to the periodic ones.

    Returns ``cell`` itself (not a copy) when every direction is periodic.

    Non-periodic lattice vectors never enter an offset, so they may be zero or arbitrary in the
    input; the completed cell is invertible and gives the largest image spacing along periodic axes.
    """
    if pbc.all():
        return cell
    out = cell.copy()
    per = np.flatnonzero(pbc)
    if per.size == 0:
        return np.eye(3)
    # orthonormal basis of the complement of span(periodic rows), via SVD
    _, _, vt = np.linalg.svd(cell[per], full_matrices=True)
    complement = vt[per.size:]
    for row, axis in zip(complement, np.flatnonzero(~pbc)):
        out[axis] = row
    if np.linalg.det(out) < 0 and (~pbc).any():  # keep the handedness positive (cosmetic)
        out[np.flatnonzero(~pbc)[0]] *= -1.0
    return out


def image_counts(cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> np.ndarray:
    """Images needed per axis: ``ceil(cutoff / h_c)`` with h_c the spacing of lattice planes.

    For positions wrapped into [0, 1) fractional coordinates this is enough for any cell shape,
    including cutoffs longer than the cell vectors and strongly skewed cells.
    """
    inv = np.linalg.inv(cell)
    recip_norm = np.linalg.norm(inv, axis=0)  # |b_c| = 1 / h_c
    counts = np.ceil(cutoff * recip_norm * (1.0 + 1e-12)).astype(np.int64)
    return np.where(pbc, counts, 0)


def radius_neighbors_numpy(
    pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All (i, j, k) with ``0 < |pos[j] + k @ cell - pos[i]| < cutoff`` by image enumeration.

    Vectorised over atom pairs; the loop runs over chunks of images only (bounded memory).

    Returns:
        ``centre [E], neighbour [E], offsets [E, 3], dist [E]`` (int64, int64, int64, float64).
    """
    full = complete_cell(cell, pbc)
    n = pos.shape[0]
    frac = pos @ np.linalg.inv(full)
    shift = np.where(pbc, np.floor(frac), 0.0).astype(np.int64)  # pos = wrapped + shift @ cell
    wrapped = pos - shift @ full
    counts = image_counts(full, pbc, cutoff)
    images = np.array(list(itertools.product(*(range(-c, c + 1) for c in counts))), dtype=np.int64)
    base = wrapped[None, :, :] - wrapped[:, None, :]  # [i, j, 3] = w_j - w_i
    chunk = max(1, _PAIR_BUDGET // max(1, n * n))
    parts = []
    for start in range(0, len(images), chunk):
        ks = images[start:start + chunk]
        vec = base[None] + (ks @ full)[:, None, None, :]  # [M, i, j, 3]
        d2 = np.einsum("mijd,mijd->mij", vec, vec)
        mask = d2 < cutoff * cutoff
        for z in np.flatnonzero(~ks.any(axis=1)):  # the atom itself, no image
            mask[z, np.arange(n), np.arange(n)] = False
        m, ci, nj = np.nonzero(mask)
        parts.append((ci, nj, ks[m], np.sqrt(d2[m, ci, nj])))
    if not parts:
        return _empty()
    ci = np.concatenate([p[0] for p in parts]).astype(np.int64)
    nj = np.concatenate([p[1] for p in parts]).astype(np.int64)
    k = np.concatenate([p[2] for p in parts])
    dist = np.concatenate([p[3] for p in parts])
    # back to the frame of the positions as given: w_j + k L - w_i = p_j + (k - s_j + s_i) L - p_i
    offsets = k - shift[nj] + shift[ci]
    return ci, nj, offsets, dist


def radius_neighbors_vesin(
    pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Same contract as :func:`radius_neighbors_numpy`, computed with ``vesin`` (cell lists, C++)."""
    import vesin

    if pos.shape[0] == 0:
        return _empty()
    full = complete_cell(cell, pbc)
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    ci, nj, offsets, dist = nl.compute(points=pos, box=full, periodic=pbc.tolist(), quantities="ijSd")
    return (
        ci.astype(np.int64), nj.astype(np.int64), offsets.astype(np.int64), np.asarray(dist, dtype=np.float64)
    )


def radius_neighbors_pymatgen(
    pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Same contract as :func:`radius_neighbors_numpy`, computed with pymatgen's compiled
    ``find_points_in_spheres`` (cell lists; the search behind ``Structure.get_neighbor_list``)."""
    from pymatgen.optimization.neighbors import find_points_in_spheres

    if pos.shape[0] == 0:
        return _empty()
    full = np.ascontiguousarray(complete_cell(cell, pbc))
    ci, nj, offsets, dist = find_points_in_spheres(
        pos, pos, r=float(cutoff), pbc=pbc.astype(np.int64), lattice=full, tol=1e-8
    )
    # the atom itself comes back at distance exactly 0; its images are a lattice vector away
    keep = (dist < cutoff) & ((ci != nj) | (dist > 1e-8))
    return (
        ci[keep].astype(np.int64, copy=False), nj[keep].astype(np.int64, copy=False),
        offsets[keep].astype(np.int64), dist[keep],
    )


def radius_neighbors(
    pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float, backend: Backend = "pymatgen"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Radius neighbours of every atom over all periodic images (dispatch on ``backend``).

    Pairs at distance 0 with offset 0 (the atom itself) are excluded; images of the atom itself
    (i -> i with non-zero offset) are included. The test is strict: ``dist < cutoff``.
    """
    if backend == "pymatgen":
        return radius_neighbors_pymatgen(pos, cell, pbc, cutoff)
    if backend == "vesin":
        return radius_neighbors_vesin(pos, cell, pbc, cutoff)
    if backend == "numpy":
        return radius_neighbors_numpy(pos, cell, pbc, cutoff)
    raise ValueError(f"unknown neighbour backend '{backend}'; use 'pymatgen', 'vesin' or 'numpy'")


def select_nearest(
    centre: np.ndarray,
    dist: np.ndarray,
    num_atoms: int,
    max_neighbors: int | None,
    shell_tolerance: float | None,
) -> np.ndarray:
    """Indices of the edges kept per centre, sorted by (centre, distance).

    Without ``shell_tolerance`` at most ``max_neighbors`` edges per centre are kept; among edges
    of exactly equal length the search backend's order decides (stable sort). With it, every edge no longer
    than the K-th shortest plus the tolerance is kept, so a shell of equal distances is kept
    whole (as OCP's ``radius_graph_pbc``), and a centre may keep more than K edges.
    """
    # strict cut: stable, so exact ties keep the backend's order on every machine; with shells the
    # tie order cannot change the edge set and the faster unstable sort is used
    by_dist = np.argsort(dist, kind="stable" if not shell_tolerance else "quicksort")
    small = np.int16 if num_atoms < 2**15 else np.int64  # 16-bit keys sort stably by radix, O(E)
    order = by_dist[np.argsort(centre[by_dist].astype(small), kind="stable")]
    if max_neighbors is None or order.size == 0:
        return order
    c_sorted = centre[order]
    counts = np.bincount(c_sorted, minlength=num_atoms)
    starts = np.cumsum(counts) - counts
    if not shell_tolerance:
        rank = np.arange(order.size) - starts[c_sorted]
        return order[rank < max_neighbors]
    over = counts > max_neighbors
    if not over.any():
        return order
    d_sorted = dist[order]
    threshold = np.full(num_atoms, np.inf)
    threshold[over] = d_sorted[starts[over] + max_neighbors - 1] + shell_tolerance
    return order[d_sorted <= threshold[c_sorted]]


def self_image_offsets(pbc: np.ndarray, mode: SelfImageMode) -> np.ndarray:
    """Offsets of the self-image edges, restricted to periodic directions.

    ``positive``: (0,0,1), (0,1,0), (1,0,0), (0,1,1), (1,0,1), (1,1,0) (the reference's six);
    ``symmetric``: those and their negatives (twelve); ``none``: no edge. An offset is dropped if it
    has a non-zero component along a non-periodic direction.
    """
    return _self_image_offsets(tuple(bool(p) for p in np.asarray(pbc).tolist()), mode)


@functools.lru_cache(maxsize=64)
def _self_image_offsets(pbc: tuple[bool, ...], mode: str) -> np.ndarray:
    if mode == "none":
        return np.zeros((0, 3), dtype=np.int64)
    if mode == "positive":
        offs = POSITIVE_SELF_OFFSETS
    elif mode == "symmetric":
        offs = np.concatenate([POSITIVE_SELF_OFFSETS, -POSITIVE_SELF_OFFSETS])
    else:
        raise ValueError(f"unknown self_images mode '{mode}'; use 'positive', 'symmetric' or 'none'")
    allowed = ~((offs != 0) & ~np.asarray(pbc, dtype=bool)[None, :]).any(axis=1)
    out = offs[allowed].copy()
    out.flags.writeable = False  # shared between calls
    return out


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    e = np.zeros(0, dtype=np.int64)
    return e, e.copy(), np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.float64)
