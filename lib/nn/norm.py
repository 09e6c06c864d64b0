"""Feature normalisation between layers: a stability measure outside the E3Relax paper."""
from __future__ import annotations

import torch
from torch import nn

from e3relax.nn.common import Block, LayerState
from e3relax.registry import BLOCKS


def vector_rms_norm(v: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    """``g * v / sqrt(mean_f |v_f|^2 + eps)``: each site's vector channels rescaled by one invariant.

    Shapes: v [..., 3, F] (Cartesian axis second to last), gain [F] -> [..., 3, F]
    """
    rms = torch.sqrt((v * v).sum(-2, keepdim=True).mean(-1, keepdim=True) + eps)
    return v / rms * gain


@BLOCKS.register("feature_norm")
class FeatureNorm(Block):
    """Normalises the features at the start of a layer, so that no layer amplifies the last one's output.

    The gated updates of paper Eq. 3-4 and Eq. 11-12 multiply features by gates computed from their
    own norms, so one layer can square the magnitudes the layer before produced; at a high learning
    rate a few structures then reach 1e37 and the loss turns NaN. This block is the equivariant
    layer norm of EquiformerV2 (Sec. 3.3) and of TorchMD-Net's equivariant transformer, applied to
    the E3Relax state::

        x <- LayerNorm(x)                                 (learnable gain and bias per channel)
        v <- g_v * v / sqrt(mean_f |v_f|^2 + eps)         (per atom; one invariant scale; g_v = 1 at init)
        y <- LayerNorm(y);  ybar <- g_y * ybar / sqrt(mean_f |ybar_f|^2 + eps)   (lattice nodes, if any)

    Rotation, reflection, permutation and translation laws are kept (every scale is an invariant).
    Zero vectors stay zero (the first layer's ``v``).

    Args:
        hidden_channels: F.
        eps: added to the mean squared norm of the vector features.

    Shapes:
        s: [N, F]; v: [N, 3, F]; y: [B, 3, F] or None; ybar: [B, 3, 3, F] or None -> the same
    """

    reads = ("s", "v")
    writes = ("s", "v")

    def __init__(self, hidden_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = float(eps)
        self.scalar = nn.LayerNorm(hidden_channels)
        self.vector_gain = nn.Parameter(torch.ones(hidden_channels))
        self.lattice_scalar = nn.LayerNorm(hidden_channels)
        self.lattice_vector_gain = nn.Parameter(torch.ones(hidden_channels))

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scalar(s), vector_rms_norm(v, self.vector_gain, self.eps)

    def step(self, state: LayerState) -> None:
        state.s, state.v = self(state.s, state.v)
        if state.y is not None:
            state.y = self.lattice_scalar(state.y)
        if state.ybar is not None:
            state.ybar = vector_rms_norm(state.ybar, self.lattice_vector_gain, self.eps)
