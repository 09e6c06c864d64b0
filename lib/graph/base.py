"""Interface of a graph builder: structure arrays in, edge arrays out."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GraphEdges:
    """Edges of one structure, sorted by target (centre) atom.

    Attributes:
        edge_index: [2, E] int64, row 0 = source/neighbour j, row 1 = target/centre i.
        cell_offsets: [E, 3] int64, the neighbour sits at ``pos[j] + offset @ cell``.
        edge_type: [E] int64, ``keys.EDGE_RADIUS`` or ``keys.EDGE_SELF_IMAGE``.
    """

    edge_index: np.ndarray
    cell_offsets: np.ndarray
    edge_type: np.ndarray

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])


class GraphBuilder:
    """Base class of registered graph builders.

    ``builder(pos [N,3], cell [3,3] rows = lattice vectors, pbc [3] bool) -> GraphEdges``.
    ``params()`` returns the settings (stored in LMDB metadata so a dataset says how it was built).
    """

    def __call__(self, pos: np.ndarray, cell: np.ndarray, pbc=(True, True, True)) -> GraphEdges:  # pragma: no cover
        raise NotImplementedError

    def params(self) -> dict:  # pragma: no cover
        raise NotImplementedError
