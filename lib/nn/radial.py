"""Radial bases of interatomic (and atom-lattice) distances, with a smooth polynomial envelope."""
from __future__ import annotations

import math

import torch
from torch import nn

from e3relax.nn.common import kernel
from e3relax.registry import BLOCKS


def polynomial_envelope(u: torch.Tensor, exponent: int = 5) -> torch.Tensor:
    """Smooth cutoff ``env(u) = 1 - (p+1)(p+2)/2 u^p + p(p+2) u^(p+1) - p(p+1)/2 u^(p+2)`` for u < 1, else 0.

    With ``p = 5``: ``1 - 21 u^5 + 35 u^6 - 15 u^7`` (DimeNet / the reference ``RadialBasis``).

    Shapes:
        u: [...] (distance / cutoff) -> [...]
    """
    p = exponent
    a = -(p + 1) * (p + 2) / 2.0
    b = p * (p + 2.0)
    c = -p * (p + 1) / 2.0
    up = u.pow(p)
    env = 1.0 + a * up + b * up * u + c * up * u * u
    return torch.where(u < 1.0, env, torch.zeros_like(u))


@kernel
def _gaussian(dist: torch.Tensor, cutoff: float, num_rbf: int, exponent: int) -> torch.Tensor:
    u = dist / cutoff
    offsets = torch.arange(num_rbf, dtype=u.dtype, device=u.device) / (num_rbf - 1)
    g = torch.exp(-0.5 * (num_rbf - 1) ** 2 * (u[..., None] - offsets) ** 2)
    return polynomial_envelope(u, exponent)[..., None] * g


@BLOCKS.register("gaussian_rbf")
class GaussianRBF(nn.Module):
    """Gaussian radial basis on the scaled distance, times a polynomial envelope.

    ``lambda_k(d) = env(d/c) * exp(-(d/c - mu_k)^2 / (2 Delta^2))``, ``mu_k = k/(K-1)``,
    ``Delta = 1/(K-1)`` (spec 1.2; the radial term of paper Eq. 1-2 and Eq. 15-16). The
    reference training scripts use ``cutoff = 30`` Angstrom on a 6 Angstrom graph, so long
    self-image edges and atom-lattice distances stay inside the support.

    Args:
        num_rbf: number K of basis functions.
        cutoff: radial cutoff c (Angstrom).
        envelope_exponent: p of the polynomial envelope.

    Shapes:
        dist: [...] -> [..., K]
    """

    def __init__(self, num_rbf: int = 128, cutoff: float = 30.0, envelope_exponent: int = 5) -> None:
        super().__init__()
        if num_rbf < 2:
            raise ValueError(f"gaussian_rbf: num_rbf must be >= 2, got {num_rbf}")
        self.num_rbf = num_rbf
        self.cutoff = float(cutoff)
        self.envelope_exponent = envelope_exponent

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        out = _gaussian(dist.reshape(-1), self.cutoff, self.num_rbf, self.envelope_exponent)  # one rank: one kernel
        return out.reshape(*dist.shape, self.num_rbf)


@BLOCKS.register("bessel_rbf")
class BesselRBF(nn.Module):
    """Spherical Bessel radial basis (DimeNet) times the polynomial envelope.

    ``lambda_k(d) = env(d/c) * sqrt(2/c) * sin(k pi d / c) / d``, ``k = 1..K`` (an alternative to
    the Gaussian basis of paper Eq. 1-2; not used by the reference).

    Shapes:
        dist: [...] -> [..., K]
    """

    def __init__(self, num_rbf: int = 128, cutoff: float = 30.0, envelope_exponent: int = 5) -> None:
        super().__init__()
        self.num_rbf = num_rbf
        self.cutoff = float(cutoff)
        self.envelope_exponent = envelope_exponent

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        u = dist / self.cutoff
        safe = torch.clamp(dist, min=1e-9)[..., None]
        freq = math.pi * torch.arange(1, self.num_rbf + 1, dtype=u.dtype, device=u.device)
        b = math.sqrt(2.0 / self.cutoff) * torch.sin(freq * u[..., None]) / safe
        return polynomial_envelope(u, self.envelope_exponent)[..., None] * b
