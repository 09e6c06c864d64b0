"""EquiformerV2 nonlinearities and normalisation: separable S2 activation, exact gate, RMS layer norm."""
from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from e3relax.nn.equiformer_v2.so3 import SphericalLayout
from e3relax.model_base import SymmetryLaws
from e3relax.nn.common import Block
from e3relax.registry import BLOCKS

__all__ = ["SmoothLeakyReLU", "SeparableS2Activation", "GateActivation", "RMSNormSH"]


class SmoothLeakyReLU(nn.Module):
    """``((1+a)/2) x + ((1-a)/2) x (2 sigmoid(x) - 1)`` (EquiformerV2 attention re-normalisation)."""

    def __init__(self, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.alpha = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha
        return 0.5 * (1 + a) * x + 0.5 * (1 - a) * x * (2 * torch.sigmoid(x) - 1)


@BLOCKS.register("separable_s2_activation")
class SeparableS2Activation(Block):
    """Separable S2 activation (EquiformerV2 Sec. 3.2): l = 0 -> SiLU(gating scalars);
    l > 0 -> ``FromGrid(SiLU(ToGrid(x)))`` on a (res_beta x res_alpha) sphere grid.

    Equivariant only up to the grid quadrature error (e3nn ``ToS2Grid``/``FromS2Grid``), and not
    under reflections of features with odd l. ``res`` trades accuracy for speed.

    Args:
        lmax: maximum degree.
        res: grid resolution (beta and alpha points).

    Shapes:
        scalars: [E, C], x: [E, S, C]  ->  [E, S, C]
    """

    num_gates_per_channel = 1
    symmetry = SymmetryLaws(
        reflection=False,
        broken={"reflection": "S2-grid activation of odd-l features is not reflection-equivariant"},
        approximate={"rotation": "S2-grid quadrature error: measured 5.8e-9 absolute at a signal of 130 "
                                 "(float64, res 18); it grows with the activation inputs and in float32"},
    )

    def __init__(self, lmax: int, res: int = 18) -> None:
        super().__init__()
        size, grid = (lmax + 1) ** 2, (res, res + 1)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # build the (linear) grid transforms in float64
        try:
            to_grid = o3.ToS2Grid(lmax, grid)(torch.eye(size)).reshape(size, -1)            # [S, G]
            num = to_grid.shape[1]
            from_grid = o3.FromS2Grid(grid, lmax)(torch.eye(num).reshape(num, *grid))      # [G, S]
        finally:
            torch.set_default_dtype(previous)
        self.register_buffer("to_grid", to_grid.to(previous), persistent=False)
        self.register_buffer("from_grid", from_grid.to(previous), persistent=False)

    def forward(self, scalars: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        grid = torch.matmul(x.transpose(1, 2), self.to_grid.to(x.dtype))          # [E, C, G]
        y = torch.matmul(nn.functional.silu(grid), self.from_grid.to(x.dtype)).transpose(1, 2)
        return torch.cat([nn.functional.silu(scalars)[:, None, :], y[:, 1:]], dim=1)


@BLOCKS.register("eqv2_gate_activation")
class GateActivation(Block):
    """Exact gate (EquiformerV2 ``GateActivation``, e3nn ``Gate``): l = 0 -> SiLU(scalars),
    l > 0 -> ``x_l * sigmoid(g_l)`` with one gate per (degree, channel). Exactly equivariant; used
    for the exact equivariance tests instead of the S2 grid.

    Paper: EquiformerV2 (Liao et al., ICLR 2024), adapted as in E3Relax Appendix C; equations in
    e3relax-spec §3.5.

    Args:
        lmax: maximum degree.

    Shapes:
        scalars: [E, C * (1 + lmax)] (C SiLU inputs, then lmax*C gates), x: [E, S, C] -> [E, S, C]
    """

    def __init__(self, lmax: int) -> None:
        super().__init__()
        self.lmax = lmax
        self.num_gates_per_channel = 1 + lmax
        self.register_buffer("degree", SphericalLayout(lmax, 0).degree, persistent=False)

    def forward(self, scalars: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        s, gates = scalars[:, :c], scalars[:, c:].reshape(-1, self.lmax, c)
        g = torch.sigmoid(gates)[:, self.degree[1:] - 1]  # [E, S-1, C]
        return torch.cat([nn.functional.silu(s)[:, None, :], x[:, 1:] * g], dim=1)


@BLOCKS.register("rms_norm_sh")
class RMSNormSH(Block):
    """Separable layer norm ``rms_norm_sh`` (EquiformerV2 Sec. 3.3).

    The l = 0 part is mean-centred over channels; one RMS over all degrees (each degree weighted
    equally, i.e. averaged over its 2l+1 coefficients first) and channels scales every coefficient;
    affine weight per (l, channel), bias on l = 0 only. Rotation-equivariant exactly.

    Args:
        lmax: maximum degree.
        channels: C.

    Shapes:
        x: [N, S, C]  ->  [N, S, C]
    """

    def __init__(self, lmax: int, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(lmax + 1, channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        degree = SphericalLayout(lmax, 0).degree
        self.register_buffer("degree", degree, persistent=False)
        balance = 1.0 / ((2 * degree + 1).double() * (lmax + 1))
        self.register_buffer("balance", balance, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x[:, :1] - x[:, :1].mean(dim=-1, keepdim=True)
        x = torch.cat([x0, x[:, 1:]], dim=1)
        ms = torch.einsum("nsc,s->nc", x.pow(2), self.balance.to(x.dtype)).mean(dim=-1)  # [N]
        x = x * torch.rsqrt(ms + self.eps)[:, None, None] * self.weight[self.degree]
        return torch.cat([x[:, :1] + self.bias, x[:, 1:]], dim=1)
