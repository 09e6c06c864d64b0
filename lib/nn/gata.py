"""GotenNet interaction blocks: geometry-aware tensor attention (GATA) and hierarchical tensor
refinement (HTR) of the edge scalars (Aykent & Xia, ICLR 2025, Sec. 3.2-3.3).

Layouts as in :mod:`e3relax.nn.gotennet`: ``h: [N, F]``, ``X: [N, S, F]`` (degrees 1..L),
``t: [E, F]``, ``rsh: [E, S]``. Edge j -> i: row 0 of edge_index is j, row 1 is i.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.utils import scatter, softmax

from e3relax.nn.common import Block, mlp, xavier_
from e3relax.nn.gotennet import degree_index
from e3relax.nn.radial import cosine_cutoff
from e3relax.registry import BLOCKS

__all__ = ["GeometryAwareTensorAttention", "HierarchicalTensorRefinement"]


def _linear(f_in: int, f_out: int, bias: bool = True) -> nn.Linear:
    lin = nn.Linear(f_in, f_out, bias=bias)
    nn.init.xavier_uniform_(lin.weight)
    if bias:
        nn.init.zeros_(lin.bias)
    return lin


@BLOCKS.register("gata", aliases=("geometry_aware_tensor_attention",))
class GeometryAwareTensorAttention(Block):
    """GATA: multi-head attention whose logits are modulated by the edge scalars, producing invariant
    and steerable messages (GotenNet paper Eq. 4-7; ``GATA.message``).

    ::

        q_i = W_q h_i,  k_j = W_k h_j   (H heads of F/H)
        a_ij = softmax_j( sum_d q_i k_j SiLU(W_re t_ij) ) * sqrt(n_i) / sqrt(F)     (n_i = in-degree)
        o_ij = a_ij * gamma_v(h_j) + (W_rs t_ij) * gamma_s(h_j) * f_cut(r_ij)      ([E, mF])
        o_ij -> o^s, o^d, o^t   (o^d, o^t one chunk each, or one per degree with degree_wise)
        h_i <- h_i + sum_j o^s_ij
        X_i^(l) <- X_i^(l) + sum_j (o^d_ij Y_l(r_ij) + o^t_ij X_j^(l))

    Only invariant weights multiply ``Y_l`` and ``X^(l)``, so X stays O(3)-equivariant.

    Args:
        hidden_channels: F (divisible by num_heads).
        num_heads: H.
        lmax: L.
        cutoff: cosine-cutoff radius of the spatial filter.
        attn_dropout: dropout on the attention weights (training only).
        scale_edge: multiply the weights by ``sqrt(n_i)`` (the authors' default).
        degree_wise: separate ``o^d`` and ``o^t`` chunks per degree (``sep_dir``/``sep_tensor``).

    Shapes:
        h: [N, F], X: [N, S, F], t: [E, F], rsh: [E, S], dist: [E], edge_index: [2, E]
        -> h: [N, F], X: [N, S, F]
    """

    def __init__(
        self,
        hidden_channels: int,
        num_heads: int = 8,
        lmax: int = 2,
        cutoff: float = 5.0,
        attn_dropout: float = 0.0,
        scale_edge: bool = True,
        degree_wise: bool = False,
    ) -> None:
        super().__init__()
        f = hidden_channels
        if f % num_heads:
            raise ValueError(f"gata: hidden_channels ({f}) must be divisible by num_heads ({num_heads})")
        self.f, self.num_heads, self.lmax = f, num_heads, lmax
        self.cutoff, self.scale_edge, self.degree_wise = float(cutoff), scale_edge, degree_wise
        self.split = lmax if degree_wise else 1
        self.multiplier = 1 + 2 * self.split
        self.dropout = nn.Dropout(attn_dropout)
        self.w_q, self.w_k = _linear(f, f), _linear(f, f)
        self.gamma_s = xavier_(mlp([f, f, self.multiplier * f], activation=nn.SiLU))
        self.gamma_v = xavier_(mlp([f, f, self.multiplier * f], activation=nn.SiLU))
        self.w_re = nn.Sequential(_linear(f, f), nn.SiLU())
        self.w_rs = _linear(f, self.multiplier * f)
        self.register_buffer("deg", degree_index(lmax) if degree_wise else torch.zeros((lmax + 1) ** 2 - 1, dtype=torch.long),
                             persistent=False)

    def attention(self, h: torch.Tensor, t: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Attention weights per edge and head. Shapes: -> [E, H]."""
        j, i = edge_index[0], edge_index[1]
        n, hd = h.shape[0], self.f // self.num_heads
        q = self.w_q(h).view(n, self.num_heads, hd)
        k = self.w_k(h).view(n, self.num_heads, hd)
        te = self.w_re(t).view(-1, self.num_heads, hd)
        a = softmax((q[i] * k[j] * te).sum(-1), i, num_nodes=n, dim=0)
        if self.scale_edge:
            n_in = scatter(torch.ones_like(i, dtype=h.dtype), i, dim=0, dim_size=n, reduce="sum")
            a = a * n_in[i, None].sqrt()
        return self.dropout(a / math.sqrt(self.f))

    def forward(
        self,
        h: torch.Tensor,
        X: torch.Tensor,
        t: torch.Tensor,
        rsh: torch.Tensor,
        dist: torch.Tensor,
        edge_index: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        j, i = edge_index[0], edge_index[1]
        n, f, e = h.shape[0], self.f, t.shape[0]
        a = self.attention(h, t, edge_index)
        values = self.gamma_v(h)[j].view(e, self.num_heads, -1) * a[..., None]
        spatial = self.w_rs(t) * self.gamma_s(h)[j] * cosine_cutoff(dist, self.cutoff)[:, None]
        o = values.reshape(e, -1) + spatial
        o_s, o_d, o_t = o.split([f, self.split * f, self.split * f], dim=-1)
        o_d = o_d.view(e, self.split, f)[:, self.deg, :]  # [E, S, F], one weight per degree
        o_t = o_t.view(e, self.split, f)[:, self.deg, :]
        dX = o_d * rsh[:, :, None] + o_t * X[j]
        h = h + scatter(o_s, i, dim=0, dim_size=n, reduce="sum")
        X = X + scatter(dX, i, dim=0, dim_size=n, reduce="sum")
        return h, X


@BLOCKS.register("htr", aliases=("hierarchical_tensor_refinement",))
class HierarchicalTensorRefinement(Block):
    """HTR: update the edge scalars from degree-wise inner products of steerable features
    (GotenNet paper Eq. 8-9; ``GATA.edge_update``).

    ::

        EQ_i = X_i W_vq,   EK_j^(l) = X_j^(l) W_vk^(l)           (channel mixing, no bias)
        [optional rejection: remove the component of EQ_i^(l) / EK_j^(l) along Y_l(r_ij)]
        w_ij = sum_l <EQ_i^(l), EK_j^(l)>                         (invariant, [E, F_e])
        t_ij <- t_ij + SiLU(W_t t_ij) * gamma_w(w_ij)

    The authors' default (``edge_updates='norej'``) has no rejection and ``gamma_w`` = identity
    (F_e = F); with ``edge_channels != F`` a linear map F_e -> F is used.

    Args:
        hidden_channels: F.
        lmax: L.
        edge_channels: F_e, width of the inner products (default F).
        rejection: apply the vector rejection along the edge harmonics.

    Shapes:
        X: [N, S, F], t: [E, F], rsh: [E, S], edge_index: [2, E] -> t: [E, F]
    """

    def __init__(self, hidden_channels: int, lmax: int = 2, edge_channels: int | None = None,
                 rejection: bool = False) -> None:
        super().__init__()
        f = hidden_channels
        fe = edge_channels or f
        self.lmax, self.rejection = lmax, rejection
        self.sizes = [2 * l + 1 for l in range(1, lmax + 1)]
        self.w_vq = _linear(f, fe, bias=False)
        self.w_vk = nn.ModuleList(_linear(f, fe, bias=False) for _ in range(lmax))
        self.gamma_t = nn.Sequential(_linear(f, f), nn.SiLU())
        self.gamma_w = nn.Identity() if fe == f else _linear(fe, f)

    @staticmethod
    def _reject(rep: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Remove the component along the unit-norm harmonic ``y``. Shapes: [E, 2l+1, F], [E, 2l+1]."""
        return rep - (rep * y[..., None]).sum(1, keepdim=True) * y[..., None]

    def forward(self, X: torch.Tensor, t: torch.Tensor, rsh: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        j, i = edge_index[0], edge_index[1]
        eq = self.w_vq(X).split(self.sizes, dim=1)
        xs = X.split(self.sizes, dim=1)
        ys = rsh.split(self.sizes, dim=1)
        w = 0.0
        for l, lin in enumerate(self.w_vk):
            q_l, k_l = eq[l][i], lin(xs[l])[j]
            if self.rejection:
                q_l, k_l = self._reject(q_l, ys[l]), self._reject(k_l, -ys[l])
            w = w + (q_l * k_l).sum(1)
        return t + self.gamma_t(t) * self.gamma_w(w)
