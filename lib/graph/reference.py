"""The reference E3Relax graph, reproduced exactly (``paper_faithful`` mode).

The published preprocessing builds the graph of the unrelaxed structure as follows:

1. ``pymatgen`` ``Structure.get_neighbor_list(r=6.0, numerical_tol=0, exclude_self=True)`` on the
   structure (from ASE through ``AseAtomsAdaptor``; building the ``Structure`` directly from the
   cell, its periodic flags and Cartesian positions gives the same object, and species do not enter
   a neighbour list);
2. per centre i, its neighbours in pymatgen's order are sorted with ``numpy.argsort`` of their
   distances and the first 50 are kept: a strict cut, so part of a shell of equal distances can be
   dropped (FCC with a = 4 A keeps 50 of its 54 neighbours within 6 A);
3. every edge with j == i is dropped, including images of the atom itself within the radius;
4. six self-image edges i -> i with offsets (0,0,1), (0,1,0), (1,0,0), (0,1,1), (1,0,1), (1,1,0)
   are added to every atom, whatever their length and whatever ``pbc`` says.

The edges here are the reference's edges with the same offsets. The only difference is their
order: the reference appends all self-image edges after all radius edges, while here each centre's
radius edges (in the reference's order) are followed by its six self-image edges, so the edges are
grouped by centre like every builder's output.
"""
from __future__ import annotations

import numpy as np

from e3relax import keys
from e3relax.graph.base import GraphEdges
from e3relax.graph.neighbors import POSITIVE_SELF_OFFSETS


def pymatgen_neighbor_list(
    pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``Structure.get_neighbor_list(r=radius, numerical_tol=0, exclude_self=True)``.

    Returns:
        ``centre [E], neighbour [E], offsets [E, 3], dist [E]`` in pymatgen's order.
    """
    from pymatgen.core import Lattice, Structure

    if pos.shape[0] == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e.copy(), np.zeros((0, 3), dtype=np.int64), np.zeros(0)
    try:
        lattice = Lattice(cell, pbc=tuple(bool(p) for p in pbc))
        structure = Structure(lattice, ["H"] * pos.shape[0], pos, coords_are_cartesian=True)
    except Exception as exc:  # pymatgen raises several types for singular cells
        raise ValueError(f"cell: pymatgen cannot build a structure from this cell ({exc})") from exc
    centre, neighbour, offsets, dist = structure.get_neighbor_list(r=radius, numerical_tol=0, exclude_self=True)
    return (
        np.asarray(centre, dtype=np.int64),
        np.asarray(neighbour, dtype=np.int64),
        np.asarray(offsets, dtype=np.float64).round().astype(np.int64).reshape(-1, 3),
        np.asarray(dist, dtype=np.float64),
    )


def reference_top_k(centre: np.ndarray, dist: np.ndarray, num_atoms: int, max_neighbors: int) -> np.ndarray:
    """Edge indices kept by the reference: per centre ``argsort(dist)[:max_neighbors]``.

    Equivalent to the reference's ``(centre == i).nonzero()`` loop (same slices in the same order,
    hence the same ``argsort`` result), but groups the edges once instead of scanning per atom.
    """
    grouped = np.argsort(centre, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(centre, minlength=num_atoms))])
    kept = [np.zeros(0, dtype=np.int64)]
    for a in range(num_atoms):
        idx = grouped[bounds[a]:bounds[a + 1]]
        kept.append(idx[np.argsort(dist[idx])[:max_neighbors]])
    return np.concatenate(kept)


def reference_graph(
    pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray, radius: float = 6.0, max_neighbors: int = 50
) -> GraphEdges:
    """The reference builder's edges (see the module docstring), grouped by centre.

    Shapes:
        pos: [N, 3]; cell: [3, 3]; pbc: [3]  ->  edge_index [2, E], cell_offsets [E, 3], edge_type [E]
        with E = (kept radius edges) + 6 N.
    """
    n = pos.shape[0]
    centre, neighbour, offsets, dist = pymatgen_neighbor_list(pos, cell, pbc, radius)
    keep = reference_top_k(centre, dist, n, max_neighbors)
    keep = keep[neighbour[keep] != centre[keep]]
    self_centre = np.repeat(np.arange(n, dtype=np.int64), len(POSITIVE_SELF_OFFSETS))
    all_centre = np.concatenate([centre[keep], self_centre])
    all_neighbour = np.concatenate([neighbour[keep], self_centre])
    all_offsets = np.concatenate([offsets[keep], np.tile(POSITIVE_SELF_OFFSETS, (n, 1))])
    all_type = np.concatenate(
        [np.full(keep.size, keys.EDGE_RADIUS, dtype=np.int64), np.full(self_centre.size, keys.EDGE_SELF_IMAGE, dtype=np.int64)]
    )
    order = np.argsort(all_centre, kind="stable")
    return GraphEdges(
        edge_index=np.stack([all_neighbour[order], all_centre[order]]).astype(np.int64),
        cell_offsets=all_offsets[order].astype(np.int64),
        edge_type=all_type[order],
    )
