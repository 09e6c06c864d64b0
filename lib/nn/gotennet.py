"""GotenNet input blocks and feed-forward (Aykent & Xia, "GotenNet: Rethinking Efficient 3D Equivariant
Graph Neural Networks", ICLR 2025): node and edge initialisation, EQFF (its exp-normal radial
basis and cosine cutoff live in :mod:`e3relax.nn.radial`).

Feature layouts: atom scalars ``h: [N, F]``; steerable features ``X: [N, S, F]`` with
``S = (L+1)^2 - 1`` components of degrees l = 1..L in e3nn order (l = 1 block = x, y, z);
edge scalars ``t: [E, F]``; edge harmonics ``rsh: [E, S]`` = ``Y_l(r_ij / |r_ij|)`` with e3nn
``normalization="norm"`` (each degree block has unit norm).
"""
from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import scatter

from e3relax.nn.embedding import NUM_ELEMENTS
from e3relax.nn.common import Block, mlp
from e3relax.nn.radial import cosine_cutoff
from e3relax.registry import BLOCKS

__all__ = ["GotenNodeInit", "GotenEdgeInit", "EquivariantFeedForward",
           "degree_index"]


def degree_index(lmax: int, start: int = 1) -> torch.Tensor:
    """Degree slot of every spherical-harmonic component: ``[0,0,0, 1,1,1,1,1, ...]`` for l = start..lmax."""
    return torch.cat([torch.full((2 * l + 1,), l - start, dtype=torch.long) for l in range(start, lmax + 1)])


@BLOCKS.register("goten_node_init")
class GotenNodeInit(Block):
    """GotenNet node initialisation (paper Eq. 1-2; ``NodeInit``).

    ``m_i = sum_j A_nbr(z_j) * (W_ndp phi(r_ij)) f_cut(r_ij)``,
    ``h_i = W_nru(SiLU(LN(W_nrd [A(z_i) || m_i])))``.

    Args:
        hidden_channels: F.
        num_rbf: K, width of ``phi``.
        cutoff: cosine-cutoff radius.
        num_elements: largest atomic number embedded.

    Shapes:
        h: [N, F] (A(z)), z: [N], rbf: [E, K], dist: [E], edge_index: [2, E] -> h: [N, F]
    """

    def __init__(self, hidden_channels: int, num_rbf: int, cutoff: float, num_elements: int = NUM_ELEMENTS) -> None:
        super().__init__()
        f = hidden_channels
        self.cutoff = float(cutoff)
        self.neighbour_embedding = nn.Embedding(num_elements + 1, f)
        self.radial = nn.Linear(num_rbf, f)
        self.project = nn.Sequential(nn.Linear(2 * f, f), nn.LayerNorm(f), nn.SiLU(), nn.Linear(f, f))
        for lin in (self.radial, self.project[0], self.project[3]):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(
        self, h: torch.Tensor, z: torch.Tensor, rbf: torch.Tensor, dist: torch.Tensor, edge_index: torch.Tensor
    ) -> torch.Tensor:
        j, i = edge_index[0], edge_index[1]
        filt = self.radial(rbf) * cosine_cutoff(dist, self.cutoff)[:, None]
        m = scatter(self.neighbour_embedding(z)[j] * filt, i, dim=0, dim_size=h.shape[0], reduce="sum")
        return self.project(torch.cat([h, m], dim=-1))


@BLOCKS.register("goten_edge_init")
class GotenEdgeInit(Block):
    """GotenNet edge initialisation (paper Eq. 3; ``EdgeInit``): ``t_ij = (h_i + h_j) * W_erp phi(r_ij)``.

    Shapes:
        h: [N, F], rbf: [E, K], edge_index: [2, E] -> t: [E, F]
    """

    def __init__(self, hidden_channels: int, num_rbf: int) -> None:
        super().__init__()
        self.radial = nn.Linear(num_rbf, hidden_channels)
        nn.init.xavier_uniform_(self.radial.weight)
        nn.init.zeros_(self.radial.bias)

    def forward(self, h: torch.Tensor, rbf: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return (h[edge_index[1]] + h[edge_index[0]]) * self.radial(rbf)


@BLOCKS.register("eqff", aliases=("equivariant_feed_forward",))
class EquivariantFeedForward(Block):
    """GotenNet equivariant feed-forward EQFF (paper Sec. 3.4; ``EQFF``).

    ``X' = X W_vu``; ``[m1, m2] = gamma_m([h || sqrt(sum_S X'^2 + eps)])``;
    ``h <- h + m1``; ``X <- X + m2 * X'``. ``W_vu`` mixes channels only and the gate ``m2`` is
    invariant, so X stays O(3)-equivariant degree by degree.

    Args:
        hidden_channels: F.
        eps: inside the square root of the norm (keeps the gradient finite at X = 0).

    Shapes:
        h: [N, F], X: [N, S, F] -> h: [N, F], X: [N, S, F]
    """

    def __init__(self, hidden_channels: int, eps: float = 1e-8) -> None:
        super().__init__()
        f = hidden_channels
        self.eps = eps
        self.mix = nn.Linear(f, f, bias=False)
        self.gamma_m = mlp([2 * f, f, 2 * f], activation=nn.SiLU)
        for lin in (self.mix, self.gamma_m[0], self.gamma_m[2]):
            nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def forward(self, h: torch.Tensor, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xp = self.mix(X)
        norm = torch.sqrt((xp * xp).sum(dim=-2) + self.eps)
        m1, m2 = self.gamma_m(torch.cat([h, norm], dim=-1)).chunk(2, dim=-1)
        return h + m1, X + m2[:, None, :] * xp
