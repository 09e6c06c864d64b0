"""Small float64 test crystals with their graphs, independent of the dataset code.

A brute-force periodic edge builder (radius edges with self-images removed, plus the six positive
self-image edges) and a batch constructor keep the test kit free of the graph and LMDB modules,
so that a bug there cannot hide a bug in a model (or the other way round).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch_geometric.data import Batch, Data

from e3relax import keys

__all__ = ["SELF_IMAGE_OFFSETS", "Structure", "build_edges", "random_structure", "default_structures",
           "to_data", "make_batch"]

#: the six positive self-image offsets of the E3Relax multi-edge graph
SELF_IMAGE_OFFSETS = ((0, 0, 1), (0, 1, 0), (1, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0))


@dataclass
class Structure:
    """One crystal with its graph.

    Shapes:
        pos: [N, 3], cell: [3, 3] (rows are lattice vectors), z: [N], edge_index: [2, E]
        (row 0 = neighbour j, row 1 = centre i), offsets: [E, 3], edge_type: [E];
        optional labels pos_r: [N, 3], cell_r: [3, 3].
    """

    pos: torch.Tensor
    cell: torch.Tensor
    z: torch.Tensor
    edge_index: torch.Tensor
    offsets: torch.Tensor
    edge_type: torch.Tensor
    pos_r: torch.Tensor | None = None
    cell_r: torch.Tensor | None = None

    @property
    def num_atoms(self) -> int:
        return int(self.pos.shape[0])


def build_edges(pos: torch.Tensor, cell: torch.Tensor,
                cutoff: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Brute-force periodic neighbours within ``cutoff`` (self-images dropped) and 6 self-image edges.

    Args:
        pos: atom positions [N, 3].
        cell: lattice vectors as rows [3, 3].
        cutoff: radius in Angstrom (strict: ``d < cutoff``).

    Returns:
        ``(edge_index [2, E], offsets [E, 3], edge_type [E])`` with row 0 the neighbour j and row 1
        the centre i, so that ``r_ij = pos[j] + offset @ cell - pos[i]``.
    """
    inv = torch.linalg.inv(cell)
    widths = 1.0 / torch.linalg.vector_norm(inv, dim=0)  # plane spacings
    reach = [int(math.ceil(cutoff / float(w))) + 1 for w in widths]
    src, dst, offs = [], [], []
    n = pos.shape[0]
    for k in itertools.product(*(range(-r, r + 1) for r in reach)):
        shift = torch.tensor(k, dtype=pos.dtype) @ cell
        d = torch.linalg.vector_norm(pos[None, :, :] + shift - pos[:, None, :], dim=-1)  # [i, j]
        for i, j in zip(*torch.nonzero(d < cutoff, as_tuple=True)):
            if int(i) != int(j):
                src.append(int(j))
                dst.append(int(i))
                offs.append(k)
    types = [keys.EDGE_RADIUS] * len(src)
    for i in range(n):
        for k in SELF_IMAGE_OFFSETS:
            src.append(i)
            dst.append(i)
            offs.append(k)
            types.append(keys.EDGE_SELF_IMAGE)
    return (torch.tensor([src, dst], dtype=torch.long), torch.tensor(offs, dtype=torch.long),
            torch.tensor(types, dtype=torch.long))


def random_structure(num_atoms: int, seed: int, cutoff: float = 4.0, labels: bool = False) -> Structure:
    """A generic triclinic cell (lengths ~4-5.5 A, skewed angles) with distinct random species.

    Args:
        num_atoms: number of atoms (at most 118: the species are distinct).
        seed: seed of every random draw.
        cutoff: radius of the radius edges.
        labels: also draw a "relaxed" partner (strained cell, rattled fractional positions).
    """
    g = torch.Generator().manual_seed(seed)
    cell = torch.diag(4.0 + 1.5 * torch.rand(3, generator=g, dtype=torch.float64))
    cell = cell + 0.7 * (torch.rand(3, 3, generator=g, dtype=torch.float64) - 0.5)
    frac = torch.rand(num_atoms, 3, generator=g, dtype=torch.float64)
    pos = frac @ cell
    z = torch.randperm(118, generator=g)[:num_atoms] + 1
    ei, off, et = build_edges(pos, cell, cutoff)
    s = Structure(pos, cell, z, ei, off, et)
    if labels:
        strain = torch.eye(3, dtype=torch.float64) + 0.04 * torch.randn(3, 3, generator=g, dtype=torch.float64)
        s.cell_r = cell @ strain
        s.pos_r = (frac + 0.03 * torch.randn(num_atoms, 3, generator=g, dtype=torch.float64)) @ s.cell_r
    return s


def default_structures(labels: bool = False) -> list[Structure]:
    """The kit's three default crystals: 4, 6 and 5 atoms (seeds 11, 12, 13)."""
    return [random_structure(n, seed, labels=labels) for n, seed in ((4, 11), (6, 12), (5, 13))]


def to_data(s: Structure) -> Data:
    """A torch-geometric ``Data`` with the fields of :mod:`e3relax.keys` (no ``batch`` vector)."""
    d = Data()
    d[keys.POS_U], d[keys.CELL_U], d[keys.Z] = s.pos, s.cell[None], s.z
    d[keys.EDGE_INDEX], d[keys.CELL_OFFSETS], d[keys.EDGE_TYPE] = s.edge_index, s.offsets, s.edge_type
    d[keys.NATOMS] = torch.tensor([s.pos.shape[0]])
    if s.pos_r is not None:
        d[keys.POS_R], d[keys.CELL_R] = s.pos_r, s.cell_r[None]
    d.num_nodes = s.pos.shape[0]
    return d


def make_batch(structures: list[Structure]) -> Batch:
    """One torch-geometric ``Batch`` of ``structures``, in order."""
    return Batch.from_data_list([to_data(s) for s in structures])
