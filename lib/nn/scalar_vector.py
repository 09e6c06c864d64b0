"""Scalar-vector message passing and node self-updates (paper Eq. 1-4; PaiNN for baselines)."""
from __future__ import annotations

import math

import torch
from torch import nn

from e3relax.nn.common import Block, INV_SQRT_2, INV_SQRT_3, LayerState, kernel, linear, mlp, vector_norm
from e3relax.registry import BLOCKS


@kernel
def _message(s, v, rbf, unit, j, i, w0, b0, w1, b1, wr, br, inv_sqrt_f: float, scale_residual: bool):
    """The message of :class:`ScalarVectorMessage` as a pure function of tensors (compilable once
    for every layer). Constants are folded into the smallest tensors; one fused multiply-add forms
    the ``[E, 3, F]`` vector messages."""
    f = s.shape[1]
    h = nn.functional.linear(nn.functional.silu(nn.functional.linear(s, w0, b0)) * (1.0 / 0.6), w1, b1)
    m = (h * INV_SQRT_3)[j] * nn.functional.linear(rbf, wr, br)
    m1, m2, m3 = torch.split(m, f, dim=-1)
    vec = torch.addcmul((m2 * inv_sqrt_f)[:, None, :] * unit[:, :, None], (m1 * inv_sqrt_f)[:, None, :], v[j])
    ds = torch.zeros_like(s).index_add(0, i, m3)
    dv = torch.zeros_like(v).index_add(0, i, vec)
    s = s + ds
    if scale_residual:
        s = s * INV_SQRT_2
    return s, v + dv


@BLOCKS.register("scalar_vector_message")
class ScalarVectorMessage(Block):
    """Equivariant message passing between atoms, as the reference computes paper Eq. 1-2.

    ``[m1, m2, m3]_ji = MLP_m(x_j) * (W_r lambda(d_ji) + b_r) / sqrt 3`` with one shared MLP
    ``F -> F/2 -> 3F`` (the paper's phi_h, phi_u, phi_v) and one ``Linear K -> 3F`` with bias on the
    radial basis (the paper's gamma's);
    ``dv_i = sum_j (m1 * v_j + m2 (x) u_ji) / sqrt F``, ``dx_i = sum_j m3`` (sum aggregation);
    ``x_i <- (x_i + dx_i) / sqrt 2``, ``v_i <- v_i + dv_i``.
    ``u_ji`` is the unit vector from the neighbour image to the centre.

    Args:
        hidden_channels: F.
        num_rbf: K.
        scale_residual: divide the scalar residual by sqrt 2 (reference; OCP PaiNN).

    Shapes:
        s: [N, F]; v: [N, 3, F]; rbf: [E, K]; unit: [E, 3]; edge_index: [2, E] (row 0 = j, row 1 = i)
        -> s: [N, F], v: [N, 3, F]
    """

    reads = ("s", "v", "edge_rbf", "edge_unit", "edge_index")
    writes = ("s", "v")

    def __init__(self, hidden_channels: int, num_rbf: int, scale_residual: bool = True) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.scale_residual = scale_residual
        self.scalar_mlp = mlp([hidden_channels, hidden_channels // 2, 3 * hidden_channels])
        self.rbf_proj = linear(num_rbf, 3 * hidden_channels)
        self.inv_sqrt_f = 1.0 / math.sqrt(hidden_channels)

    def forward(
        self, s: torch.Tensor, v: torch.Tensor, rbf: torch.Tensor, unit: torch.Tensor, edge_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lin0, lin1 = self.scalar_mlp[0], self.scalar_mlp[2]
        return _message(s, v, rbf, unit, edge_index[0], edge_index[1], lin0.weight, lin0.bias, lin1.weight, lin1.bias,
                  self.rbf_proj.weight, self.rbf_proj.bias, self.inv_sqrt_f, self.scale_residual)

    def step(self, state: LayerState) -> None:
        state.s, state.v = self(state.s, state.v, state.edge_rbf, state.edge_unit, state.edge_index)


@BLOCKS.register("tanh_self_update")
class TanhGatedUpdate(Block):
    """E3Relax self-updating with a tanh gate (paper Eq. 3-4, as the reference computes them).

    ``[V1, V2] = W_uv v`` (no bias); ``[h1, h2, h3] = MLP_u([x || |V2|])`` (``2F -> F -> 3F``),
    ``|V2| = sqrt(sum_xyz V2^2 + 1e-8)``;
    ``dx = h2 / sqrt 2 + x * tanh(h3)``, ``dv = h1 * V1``;
    ``x <- (x + dx) / sqrt 2``, ``v <- v + dv``.

    Shapes:
        s: [N, F]; v: [N, 3, F] -> s: [N, F], v: [N, 3, F]
    """

    reads = ("s", "v")
    writes = ("s", "v")

    def __init__(self, hidden_channels: int) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.vec_proj = linear(hidden_channels, 2 * hidden_channels, bias=False)
        self.scalar_mlp = mlp([2 * hidden_channels, hidden_channels, 3 * hidden_channels])

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v1, v2 = torch.split(self.vec_proj(v), self.hidden_channels, dim=-1)
        h = self.scalar_mlp(torch.cat([s, vector_norm(v2, dim=1)], dim=-1))
        h1, h2, h3 = torch.split(h, self.hidden_channels, dim=-1)
        ds = h2 * INV_SQRT_2 + s * torch.tanh(h3)
        return (s + ds) * INV_SQRT_2, v + h1[:, None, :] * v1

    def step(self, state: LayerState) -> None:
        state.s, state.v = self(state.s, state.v)


@BLOCKS.register("painn_update")
class PaiNNUpdate(Block):
    """The original PaiNN update block (Schuett et al. 2021, Eq. 9-11), used by the baselines.

    ``[U v, V v]`` (no bias); ``[a_ss, a_sv, a_vv] = MLP([s || |V v|])`` (``2F -> F -> 3F``);
    ``ds = a_ss + a_sv * <U v, V v>``, ``dv = a_vv * U v``; ``s <- s + ds``, ``v <- v + dv``.
    With ``scaled=True`` (OCP / DeepRelax, spec 2.2) the dot product is divided by sqrt F and
    ``ds`` by sqrt 2: ``ds = (a_ss + a_sv * <U v, V v> / sqrt F) / sqrt 2``; ``scaled=False`` is
    schnetpack's unscaled form. ``|V v| = sqrt(sum_xyz (V v)^2 + 1e-8)``.

    Shapes:
        s: [N, F]; v: [N, 3, F] -> s: [N, F], v: [N, 3, F]
    """

    reads = ("s", "v")
    writes = ("s", "v")

    def __init__(self, hidden_channels: int, scaled: bool = True) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.scaled = scaled
        self.vec_proj = linear(hidden_channels, 2 * hidden_channels, bias=False)
        self.scalar_mlp = mlp([2 * hidden_channels, hidden_channels, 3 * hidden_channels])
        self.inv_sqrt_f = 1.0 / math.sqrt(hidden_channels)

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        uv, vv = torch.split(self.vec_proj(v), self.hidden_channels, dim=-1)
        dot = torch.sum(uv * vv, dim=1)
        a = self.scalar_mlp(torch.cat([s, vector_norm(vv, dim=1)], dim=-1))
        a_ss, a_sv, a_vv = torch.split(a, self.hidden_channels, dim=-1)
        if self.scaled:
            ds = (a_ss + a_sv * dot * self.inv_sqrt_f) * INV_SQRT_2
        else:
            ds = a_ss + a_sv * dot
        return s + ds, v + a_vv[:, None, :] * uv

    def step(self, state: LayerState) -> None:
        state.s, state.v = self(state.s, state.v)
