"""HEGNN blocks: EGNN with high-degree steerable features and inner-product scalarisation
(Cen et al., "Are High-Degree Representations Really Unnecessary in
Equivariant Graph Neural Networks?", NeurIPS 2024).

Steerable node features ``chi: [N, (L+1)^2]`` hold one copy of each degree l = 0..L in e3nn order
(irreps ``o3.Irreps.spherical_harmonics(L)``, i.e. 0e + 1o + 2e + ...). Edge j -> i has
``x_ij = r_i - r_j - k_ij L`` (the authors' ``pos[row] - pos[col]``). Exact O(3)-equivariance
comes from using only within-degree inner products and per-degree invariant scalings: no
Clebsch-Gordan products.
"""
from __future__ import annotations

from typing import Optional

import torch
from e3nn import o3
from torch import nn
from torch_geometric.utils import scatter

from e3relax.nn.common import Block, mlp
from e3relax.nn.gotennet import degree_index
from e3relax.registry import BLOCKS

__all__ = ["SteerableInit", "HEGNNLayer", "degree_inner_products"]


def degree_inner_products(a: torch.Tensor, b: torch.Tensor, deg: torch.Tensor, lmax: int) -> torch.Tensor:
    """``z^(l) = <a^(l), b^(l)>`` for l = 0..L. Shapes: a, b: [E, (L+1)^2], deg: [(L+1)^2] -> [E, L+1]."""
    return scatter(a * b, deg, dim=1, dim_size=lmax + 1, reduce="sum")


@BLOCKS.register("hegnn_init", aliases=("steerable_init",))
class SteerableInit(Block):
    """HEGNN initialisation of the steerable features from the neighbourhood (paper Eq. 6; ``SH_INIT``).

    ``chi_i^(l) = mean_j  w_ij^(l) Y_l(x_ij / |x_ij|)``, ``w_ij = SiLU(MLP([|x_ij|, h_i, h_j, e_ij]))``
    with ``Y`` = ``o3.spherical_harmonics(normalize=True, normalization="norm")``. The authors write
    the per-degree scaling as an e3nn ``FullyConnectedTensorProduct(sh x 1x0e -> sh)``; with one
    copy per degree that product is exactly ``chi^(l) * w[:, l]``, which is what is computed here.

    Args:
        hidden_channels: F.
        lmax: L.
        edge_channels: width of the edge attributes e_ij (0 = none).

    Shapes:
        h: [N, F], vec: [E, 3] (r_j + k L - r_i), edge_index: [2, E], edge_attr: [E, C] | None
        -> chi: [N, (L+1)^2]
    """

    def __init__(self, hidden_channels: int, lmax: int = 2, edge_channels: int = 0) -> None:
        super().__init__()
        self.lmax = lmax
        self.irreps = o3.Irreps.spherical_harmonics(lmax)
        self.weights = mlp([2 * hidden_channels + edge_channels + 1, hidden_channels, lmax + 1], act_last=True, activation=nn.SiLU)
        self.register_buffer("deg", degree_index(lmax, start=0), persistent=False)

    def forward(
        self, h: torch.Tensor, vec: torch.Tensor, edge_index: torch.Tensor, edge_attr: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        j, i = edge_index[0], edge_index[1]
        x_ij = -vec
        dist = torch.linalg.vector_norm(x_ij, dim=-1, keepdim=True)
        parts = [dist, h[i], h[j]] + ([edge_attr] if edge_attr is not None else [])
        w = self.weights(torch.cat(parts, dim=-1))
        sh = o3.spherical_harmonics(self.irreps, x_ij, normalize=True, normalization="norm")
        return scatter(sh * w[:, self.deg], i, dim=0, dim_size=h.shape[0], reduce="mean")


@BLOCKS.register("hegnn_layer")
class HEGNNLayer(Block):
    """One HEGNN layer (paper Eq. 7-10; ``HEGNN_Layer``).

    ::

        z_ij^(l) = <chi_i^(l), chi_j^(l)>                      (inner-product scalarisation, l = 0..L)
        m_ij = SiLU(MLP([h_i, h_j, e_ij, |x_ij|^2, z_ij]))
        r_i  <- r_i + mean_j x_ij phi_x(m_ij)                  (x_ij / |x_ij| with normalize)
        chi_i^(l) <- chi_i^(l) + mean_j phi_chi(m_ij)_l (chi_i^(l) - chi_j^(l))
        h_i  <- phi_h([h_i, mean_j m_ij])                      (no residual, as the authors)

    The N-body velocity term of the original (``phi_v(h_i) v_i``) is dropped: crystals have none.

    Args:
        hidden_channels: F.
        lmax: L.
        edge_channels: width of e_ij (0 = none).
        normalize: unit ``x_ij`` in the coordinate update (an EGNN option, added for long
            crystal edges; the authors' HEGNN has none).
        coord_init_gain: if set, xavier gain of the last linear of ``phi_x`` (EGNN uses 0.001);
            ``None`` keeps PyTorch's default initialisation, as the authors.
        eps: added to the norm when normalising.

    Shapes:
        h: [N, F], pos: [N, 3], chi: [N, (L+1)^2], vec: [E, 3], edge_index: [2, E],
        edge_attr: [E, C] | None -> h: [N, F], pos: [N, 3], chi: [N, (L+1)^2]
    """

    def __init__(
        self,
        hidden_channels: int,
        lmax: int = 2,
        edge_channels: int = 0,
        normalize: bool = True,
        coord_init_gain: Optional[float] = None,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        f = hidden_channels
        self.lmax, self.normalize, self.eps = lmax, normalize, eps
        self.edge_channels = edge_channels
        self.msg = mlp([2 * f + edge_channels + 1 + lmax + 1, f, f], act_last=True, activation=nn.SiLU)
        self.coord = mlp([f, f, 1], act_last=False, activation=nn.SiLU)
        if coord_init_gain is not None:
            nn.init.xavier_uniform_(self.coord[2].weight, gain=coord_init_gain)
        self.node = mlp([2 * f, f, f], act_last=False, activation=nn.SiLU)
        self.scale = mlp([f, f, lmax + 1], act_last=False, activation=nn.SiLU)
        self.register_buffer("deg", degree_index(lmax, start=0), persistent=False)

    def forward(
        self,
        h: torch.Tensor,
        pos: torch.Tensor,
        chi: torch.Tensor,
        vec: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        j, i = edge_index[0], edge_index[1]
        n = h.shape[0]
        x_ij = -vec
        dist2 = (x_ij * x_ij).sum(-1, keepdim=True)
        z = degree_inner_products(chi[i], chi[j], self.deg, self.lmax)
        parts = [h[i], h[j]] + ([edge_attr] if edge_attr is not None else []) + [dist2, z]
        m = self.msg(torch.cat(parts, dim=-1))
        if self.normalize:
            x_ij = x_ij / (dist2.sqrt() + self.eps)
        d_pos = x_ij * self.coord(m)
        d_chi = (chi[i] - chi[j]) * self.scale(m)[:, self.deg]
        m_agg = scatter(m, i, dim=0, dim_size=n, reduce="mean")
        pos = pos + scatter(d_pos, i, dim=0, dim_size=n, reduce="mean")
        chi = chi + scatter(d_chi, i, dim=0, dim_size=n, reduce="mean")
        h = self.node(torch.cat([h, m_agg], dim=-1))
        return h, pos, chi
