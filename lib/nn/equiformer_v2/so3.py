"""EquiformerV2 primitives: coefficient layout, edge-frame Wigner rotation, per-degree linear, radial MLP.

Conventions (e3nn 0.6): a feature of degree <= lmax is ``[..., S, C]`` with ``S = (lmax+1)^2``
coefficients ordered ``l^2 + (m + l)``; the polar axis is **y**. The edge frame of a unit vector
``u`` is ``R_e = angles_to_matrix(alpha, beta, 0)`` with ``(alpha, beta) = xyz_to_angles(u)``, so
``R_e y = u``; features are rotated into the frame with ``D(R_e)^T`` and back with ``D(R_e)``.
In the frame, a rotation about y mixes only the pair ``(l - m, l + m)`` of each degree, which is
what the SO(2) convolution exploits (Passaro & Zitnick, eSCN, ICML 2023; Liao et al., EquiformerV2).
"""
from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

from e3relax.nn.common import Block
from e3relax.registry import BLOCKS

__all__ = ["SphericalLayout", "edge_wigner", "rotate_to_frame", "rotate_from_frame", "SO3Linear",
           "RadialMLP"]


class SphericalLayout:
    """Index bookkeeping for degree <= lmax features and their |m| <= mmax truncation.

    Attributes:
        degree: [S] long, degree l of each coefficient.
        m_zero: indices of the m = 0 coefficient of each degree (lmax + 1 of them).
        m_plus / m_minus: for m = 1..mmax, indices of the +m / -m coefficients of degrees l >= m.
        mask: [S] bool, coefficients kept by the m-truncation.
    """

    def __init__(self, lmax: int, mmax: int) -> None:
        if not 0 <= mmax <= lmax:
            raise ValueError(f"EquiformerV2 layout: need 0 <= mmax <= lmax, got lmax={lmax}, mmax={mmax}")
        self.lmax, self.mmax = lmax, mmax
        self.size = (lmax + 1) ** 2
        self.degree = torch.cat([torch.full((2 * l + 1,), l, dtype=torch.long) for l in range(lmax + 1)])
        self.m_zero = torch.tensor([l * l + l for l in range(lmax + 1)])
        self.m_plus = [torch.tensor([l * l + l + m for l in range(m, lmax + 1)]) for m in range(1, mmax + 1)]
        self.m_minus = [torch.tensor([l * l + l - m for l in range(m, lmax + 1)]) for m in range(1, mmax + 1)]
        kept = torch.cat([self.m_zero, *self.m_plus, *self.m_minus])
        self.mask = torch.zeros(self.size, dtype=torch.bool)
        self.mask[kept] = True
        # order of the truncated pieces [m0, m1+, m1-, m2+, m2-, ...] then the dropped ones
        pieces = [self.m_zero]
        for p, n in zip(self.m_plus, self.m_minus):
            pieces += [p, n]
        self.num_kept = int(kept.numel())
        order = torch.cat([*pieces, torch.nonzero(~self.mask).flatten()])
        self.inverse_order = torch.argsort(order)  # out = cat(pieces, zeros)[:, inverse_order]

    def pieces(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Split ``x [E, S, C]`` into ``[(x_m0, None), (x_+1, x_-1), ...]`` (each [E, L_m, C])."""
        out: list[tuple[torch.Tensor, torch.Tensor | None]] = [(x[:, self.m_zero], None)]
        out += [(x[:, p], x[:, n]) for p, n in zip(self.m_plus, self.m_minus)]
        return out

    def assemble(self, pieces: list[torch.Tensor]) -> torch.Tensor:
        """Inverse of the split: ``[y_m0, y_+1, y_-1, ...]`` -> ``[E, S, C]`` (zeros for |m| > mmax)."""
        y = torch.cat(pieces, dim=1)
        pad = y.new_zeros(y.shape[0], self.size - self.num_kept, y.shape[2])
        return torch.cat([y, pad], dim=1)[:, self.inverse_order.to(y.device)]


_GENERATORS: dict[int, torch.Tensor] = {}


def _so3_generators(l: int) -> torch.Tensor:
    """e3nn's real SO(3) generators of degree l, built once in float64 whatever the default dtype
    (``o3.wigner_D`` builds them in the default dtype, which costs ~1e-7 in float64 models)."""
    if l not in _GENERATORS:
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            _GENERATORS[l] = o3.so3_generators(l).to(torch.float64)
        finally:
            torch.set_default_dtype(previous)
    return _GENERATORS[l]


def edge_wigner(vec: torch.Tensor, lmax: int) -> torch.Tensor:
    """Block-diagonal Wigner matrices ``D(R_e)`` of the edge frames, ``R_e y = vec / |vec|``.

    ``D_l = exp(alpha X_y) exp(beta X_x)`` (e3nn ``wigner_D`` with gamma = 0). The roll about the
    edge is fixed to 0 (the original draws it at random; the SO(2) convolution is equivariant to it,
    so this only removes noise).

    Shapes:
        vec: [E, 3]  ->  D: [E, S, S]
    """
    alpha, beta = o3.xyz_to_angles(vec)
    size = (lmax + 1) ** 2
    out = vec.new_zeros(vec.shape[0], size, size)
    for l in range(lmax + 1):
        gen = _so3_generators(l).to(device=vec.device, dtype=vec.dtype)
        d = torch.matrix_exp(alpha[:, None, None] * gen[1]) @ torch.matrix_exp(beta[:, None, None] * gen[0])
        out[:, l * l:(l + 1) ** 2, l * l:(l + 1) ** 2] = d
    return out


def rotate_to_frame(wigner: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``D^T x``. Shapes: wigner [E, S, S], x [E, S, C] -> [E, S, C]."""
    return torch.einsum("eba,ebc->eac", wigner, x)


def rotate_from_frame(wigner: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``D x``. Shapes: wigner [E, S, S], x [E, S, C] -> [E, S, C]."""
    return torch.einsum("eab,ebc->eac", wigner, x)


@BLOCKS.register("so3_linear")
class SO3Linear(Block):
    """Per-degree channel mixing (EquiformerV2 ``SO3_LinearV2``): ``y_l = W_l x_l (+ b for l = 0)``.

    Paper: EquiformerV2 (Liao et al., ICLR 2024), adapted as in E3Relax Appendix C; equations in
    e3relax-spec §3.5.

    Equivariant because it never mixes coefficients, only channels within each degree.

    Args:
        in_channels / out_channels: C_in, C_out.
        lmax: maximum degree.

    Shapes:
        x: [N, S, C_in]  ->  [N, S, C_out]
    """

    def __init__(self, in_channels: int, out_channels: int, lmax: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(lmax + 1, out_channels, in_channels))
        bound = 1.0 / math.sqrt(in_channels)
        nn.init.uniform_(self.weight, -bound, bound)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("degree", SphericalLayout(lmax, 0).degree, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight[self.degree]  # [S, C_out, C_in]
        y = torch.einsum("nsc,soc->nso", x, w)
        return torch.cat([y[:, :1] + self.bias, y[:, 1:]], dim=1)


class RadialMLP(nn.Module):
    """EquiformerV2 ``RadialFunction``: (Linear -> LayerNorm -> SiLU) x 2 -> Linear. [E, D] -> [E, out]."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_channels, hidden_channels), nn.LayerNorm(hidden_channels), nn.SiLU(),
            nn.Linear(hidden_channels, hidden_channels), nn.LayerNorm(hidden_channels), nn.SiLU(),
            nn.Linear(hidden_channels, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
