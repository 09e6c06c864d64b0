"""Differentiable geometry recomputed at every layer from the current positions and cell.

Cells hold lattice vectors as rows. Edge (j -> i) with cell offset k has the vector
``r_ij = pos[j] + k @ cell[b(i)] - pos[i]`` (from the centre i to the image of neighbour j).
"""
from __future__ import annotations

from typing import Literal

import torch

LatticeAtomMode = Literal["tip_absolute", "centroid", "lattice_only"]


def edge_vectors(
    pos: torch.Tensor,
    cell: torch.Tensor,
    edge_index: torch.Tensor,
    cell_offsets: torch.Tensor,
    batch: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge vectors and lengths.

    Shapes:
        pos: [N, 3]; cell: [B, 3, 3]; edge_index: [2, E] (row 0 = j, row 1 = i);
        cell_offsets: [E, 3]; batch: [N]  ->  vec: [E, 3], dist: [E]
    """
    j, i = edge_index[0], edge_index[1]
    shift = torch.einsum("ek,ekd->ed", cell_offsets.to(pos.dtype), cell[batch[i]])
    vec = pos[j] + shift - pos[i]
    return vec, torch.linalg.vector_norm(vec, dim=-1)


def atom_lattice_vectors(
    pos: torch.Tensor,
    cell: torch.Tensor,
    batch: torch.Tensor,
    mode: LatticeAtomMode = "lattice_only",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Geometry between each atom and the three lattice nodes of its structure.

    Modes:
        ``tip_absolute`` (reference code): d_ic = l_c - r_i, the tip of l_c with its tail at the
            Cartesian origin. Depends on absolute position (not translation- or wrap-invariant).
        ``centroid``: d_ic = l_c - (r_i - mean_j r_j). Translation-invariant, wrap-dependent.
        ``lattice_only``: d_ic = l_c. Invariant to translation and wrapping, rotates with the cell.

    Shapes:
        pos: [N, 3]; cell: [B, 3, 3]; batch: [N]  ->  vec: [N, 3(c), 3(xyz)], dist: [N, 3]
    """
    lat = cell[batch]  # [N, 3, 3]
    if mode == "tip_absolute":
        vec = lat - pos[:, None, :]
    elif mode == "centroid":
        from torch_geometric.utils import scatter

        centre = scatter(pos, batch, dim=0, reduce="mean", dim_size=cell.shape[0])
        vec = lat - (pos - centre[batch])[:, None, :]
    elif mode == "lattice_only":
        vec = lat
    else:
        raise ValueError(f"unknown lattice-atom mode '{mode}'; use tip_absolute, centroid or lattice_only")
    return vec, torch.linalg.vector_norm(vec, dim=-1)


def cell_volume(cell: torch.Tensor) -> torch.Tensor:
    """Signed volume det(L). Shapes: cell [B, 3, 3] -> [B]."""
    return torch.linalg.det(cell)


def to_fractional(pos: torch.Tensor, cell: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Fractional coordinates ``pos @ cell^-1`` per atom. Shapes: [N, 3] -> [N, 3]."""
    inv = torch.linalg.inv(cell)
    return torch.einsum("nd,ndk->nk", pos, inv[batch])


def to_cartesian(frac: torch.Tensor, cell: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Cartesian coordinates ``frac @ cell`` per atom. Shapes: [N, 3] -> [N, 3]."""
    return torch.einsum("nk,nkd->nd", frac, cell[batch])
