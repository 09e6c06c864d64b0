"""EGNN blocks: the E(n)-equivariant graph convolution layer E_GCL (Satorras et al., ICML 2021).

Periodic form (edge j -> i with cell offset k, ``x_ij = r_i - r_j - k L``)::

    m_ij = phi_e([h_i, h_j, ||x_ij||^2, a_ij])                  (Eq. 3; two linears, act after both)
    r_i <- r_i + mean_j x_ij * phi_x(m_ij)                       (Eq. 4; phi_x: F -> F -> 1)
    h_i <- h_i + phi_h([h_i, sum_j m_ij])                        (Eq. 5-6, residual)

Only ``||x_ij||``, invariant node features and the vectors ``x_ij`` themselves enter, so the
coordinate update is exactly E(3)-equivariant, permutation-equivariant and (with the cell held
fixed) invariant to wrapping an atom by a lattice vector.
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import nn
from torch_geometric.utils import scatter

from e3relax.nn.common import Block, mlp
from e3relax.registry import BLOCKS

__all__ = ["EquivariantGraphConv", "InitialEdgeAttributes"]


@BLOCKS.register("initial_edge_attributes")
class InitialEdgeAttributes(Block):
    """Invariant edge attributes ``a_ij``: a radial basis of the initial edge length and a learned
    embedding of the edge type (radius neighbour / self-image), concatenated.

    Used as EGNN's optional ``a_ij`` (Satorras et al. Eq. 3) and HEGNN's ``e_ij``.

    Args:
        basis: spec of a radial-basis block in ``BLOCKS`` (needs a ``num_rbf`` attribute), or None.
        edge_type_channels: width of the edge-type embedding (0 = none).
        num_edge_types: number of edge types.

    Shapes:
        dist: [E], edge_type: [E] -> [E, num_channels] (None when num_channels == 0)
    """

    def __init__(self, basis: Optional[dict] = None, edge_type_channels: int = 4, num_edge_types: int = 2) -> None:
        super().__init__()
        self.basis = BLOCKS.build(basis) if basis is not None else None
        self.edge_type = nn.Embedding(num_edge_types, edge_type_channels) if edge_type_channels else None
        self.num_channels = (self.basis.num_rbf if self.basis is not None else 0) + edge_type_channels

    def forward(self, dist: torch.Tensor, edge_type: torch.Tensor) -> Optional[torch.Tensor]:
        parts = []
        if self.basis is not None:
            parts.append(self.basis(dist).to(dist.dtype))
        if self.edge_type is not None:
            parts.append(self.edge_type(edge_type).to(dist.dtype))
        return torch.cat(parts, dim=-1) if parts else None


@BLOCKS.register("egnn_layer", aliases=("e_gcl",))
class EquivariantGraphConv(Block):
    """One EGNN layer (``E_GCL``), updating invariant features and Cartesian coordinates.

    Paper: Satorras, Hoogeboom, Welling, "E(n) Equivariant Graph Neural Networks", ICML 2021,
    Eq. 3-6. The last linear of ``phi_x`` is initialised xavier-uniform with gain 0.001, as the
    authors' code, so the first coordinate steps are tiny.

    Args:
        hidden_channels: F, width of h and of the messages.
        edge_channels: width of the optional edge attributes ``a_ij`` (0 = none).
        residual: ``h <- h + phi_h(...)`` (authors' default) instead of ``h <- phi_h(...)``.
        attention: gate each message by ``sigmoid(Linear(m_ij))``.
        normalize: divide ``x_ij`` by ``||x_ij|| + eps`` (norm detached, as the authors' code) in
            the coordinate update; recommended for crystals whose edges reach 6 A and beyond.
        coords_agg: ``"mean"`` (authors' default) or ``"sum"`` over the incoming edges.
        tanh: bound ``phi_x`` with tanh, scaled by ``coords_range``.
        coords_range: scale of the tanh-bounded coordinate weight.
        eps: added to the norm when normalising.

    Shapes:
        h: [N, F]; pos: [N, 3]; vec: [E, 3] (r_j + k L - r_i, i.e. ``-x_ij``);
        edge_index: [2, E] (row 0 = j, row 1 = i); edge_attr: [E, edge_channels] or None
        -> h: [N, F], pos: [N, 3]
    """

    def __init__(
        self,
        hidden_channels: int,
        edge_channels: int = 0,
        residual: bool = True,
        attention: bool = False,
        normalize: bool = True,
        coords_agg: Literal["mean", "sum"] = "mean",
        tanh: bool = False,
        coords_range: float = 1.0,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if coords_agg not in ("mean", "sum"):
            raise ValueError(f"egnn_layer: coords_agg must be 'mean' or 'sum', got {coords_agg!r}")
        f = hidden_channels
        self.residual, self.attention, self.normalize = residual, attention, normalize
        self.coords_agg, self.tanh, self.coords_range, self.eps = coords_agg, tanh, coords_range, eps
        self.edge_channels = edge_channels
        self.edge_mlp = mlp([2 * f + 1 + edge_channels, f, f], act_last=True, activation=nn.SiLU)
        self.node_mlp = mlp([2 * f, f, f], activation=nn.SiLU)
        last = nn.Linear(f, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)
        self.coord_mlp = nn.Sequential(nn.Linear(f, f), nn.SiLU(), last)
        self.att_mlp = nn.Sequential(nn.Linear(f, 1), nn.Sigmoid()) if attention else None

    def messages(
        self, h: torch.Tensor, dist2: torch.Tensor, edge_index: torch.Tensor, edge_attr: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """``m_ij = phi_e([h_i, h_j, ||x_ij||^2, a_ij])`` (optionally attention-gated). Shapes: -> [E, F]."""
        j, i = edge_index[0], edge_index[1]
        parts = [h[i], h[j], dist2[:, None]]
        if self.edge_channels:
            if edge_attr is None or edge_attr.shape[-1] != self.edge_channels:
                got = None if edge_attr is None else tuple(edge_attr.shape)
                raise ValueError(f"egnn_layer: expected edge_attr [E, {self.edge_channels}], got {got}")
            parts.append(edge_attr)
        m = self.edge_mlp(torch.cat(parts, dim=-1))
        if self.att_mlp is not None:
            m = m * self.att_mlp(m)
        return m

    def forward(
        self,
        h: torch.Tensor,
        pos: torch.Tensor,
        vec: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        i = edge_index[1]
        n = h.shape[0]
        x_ij = -vec  # r_i - (r_j + k L), the authors' coord_diff direction
        dist2 = (x_ij * x_ij).sum(-1)
        m = self.messages(h, dist2, edge_index, edge_attr)
        if self.normalize:
            x_ij = x_ij / (dist2.sqrt().detach() + self.eps)[:, None]
        w = self.coord_mlp(m)
        if self.tanh:
            w = torch.tanh(w) * self.coords_range
        pos = pos + scatter(x_ij * w, i, dim=0, dim_size=n, reduce=self.coords_agg)
        out = self.node_mlp(torch.cat([h, scatter(m, i, dim=0, dim_size=n, reduce="sum")], dim=-1))
        return (h + out if self.residual else out), pos
