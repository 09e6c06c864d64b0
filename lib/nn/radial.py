"""Every radial basis of the toolkit, with the envelopes they use.

* ``gaussian_rbf``: Gaussians on d/c times a polynomial envelope (E3Relax, PaiNN, DeepRelax);
* ``bessel_rbf``: spherical Bessel functions times the polynomial envelope (DimeNet);
* ``expnorm_rbf``: exponential-normal functions times a cosine cutoff (PhysNet, GotenNet);
* ``gaussian_smearing``: Gaussians on [0, c] without envelope (EquiformerV2 ``GaussianSmearing``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from e3relax.nn.common import Block, kernel
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
class GaussianRBF(Block):
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
class BesselRBF(Block):
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


def cosine_cutoff(dist: torch.Tensor, cutoff: float) -> torch.Tensor:
    """``f_cut(d) = (cos(pi d / c) + 1) / 2`` for d < c, else 0. Shapes: [...] -> [...]."""
    return 0.5 * (torch.cos(dist * (math.pi / cutoff)) + 1.0) * (dist < cutoff).to(dist.dtype)


@BLOCKS.register("expnorm_rbf")
class ExpNormRBF(Block):
    """Exponential-normal radial basis with a cosine cutoff (PhysNet / TorchMD-Net; GotenNet's default).

    Paper: PhysNet (Unke & Meuwly 2019), as GotenNet (Aykent & Xia, ICLR 2025) uses it for the
    GotenNet baseline of E3Relax Appendix C; equations in e3relax-spec §3.4.

    ``phi_k(d) = f_cut(d) * exp(-beta_k (exp(-alpha d) - mu_k)^2)``, ``alpha = 5 / c``,
    ``mu_k`` evenly spaced on ``[exp(-c), 1]``, ``beta_k = (2 (1 - exp(-c)) / K)^-2``.

    Args:
        num_rbf: K.
        cutoff: c (Angstrom).
        trainable: learn ``mu`` and ``beta``.

    Shapes:
        dist: [...] -> [..., K]
    """

    def __init__(self, num_rbf: int = 20, cutoff: float = 5.0, trainable: bool = False) -> None:
        super().__init__()
        self.num_rbf, self.cutoff = num_rbf, float(cutoff)
        self.alpha = 5.0 / self.cutoff
        start = math.exp(-self.cutoff)
        means = torch.linspace(start, 1.0, num_rbf)
        betas = torch.full((num_rbf,), (2.0 / num_rbf * (1.0 - start)) ** -2)
        if trainable:
            self.means, self.betas = nn.Parameter(means), nn.Parameter(betas)
        else:
            self.register_buffer("means", means)
            self.register_buffer("betas", betas)

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        d = dist[..., None]
        means, betas = self.means.to(dist.dtype), self.betas.to(dist.dtype)
        return cosine_cutoff(d, self.cutoff) * torch.exp(-betas * (torch.exp(-self.alpha * d) - means) ** 2)


@BLOCKS.register("gaussian_smearing")
class GaussianSmearing(Block):
    """Gaussian radial basis on ``[0, cutoff]`` without envelope (EquiformerV2 ``GaussianSmearing``).

    ``phi_k(d) = exp(-(d - mu_k)^2 / (2 Delta^2))``, ``mu_k = k c / (K - 1)``, ``Delta = c / (K - 1)``
    (the edge-distance embedding of EquiformerV2, Liao et al. ICLR 2024, Sec. 3).

    Args:
        num_rbf: K.
        cutoff: c (Angstrom).

    Shapes:
        dist: [E] -> [E, K]
    """

    def __init__(self, num_rbf: int, cutoff: float) -> None:
        super().__init__()
        self.num_rbf = num_rbf
        self.register_buffer("centers", torch.linspace(0.0, cutoff, num_rbf))
        self.coeff = -0.5 / (cutoff / (num_rbf - 1)) ** 2

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.coeff * (dist[:, None] - self.centers.to(dist.dtype)) ** 2)
