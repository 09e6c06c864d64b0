"""Atom position update from vector features (paper Eq. 5-8)."""
from __future__ import annotations

import torch
from torch import nn

from e3relax.nn.common import Block, LayerState, linear, mlp
from e3relax.registry import BLOCKS


@BLOCKS.register("position_update")
class PositionUpdate(Block):
    """Equivariant displacement of each atom from its vector features.

    ``alpha_i = softmax_F(MLP_g(x_i))`` (``F -> F -> F``, paper Eq. 5-6);
    ``dr_i = step_scale * (W_p v_i + sum_f alpha_if v_i[:, f])`` (Eq. 7, ``W_p: F -> 1`` no bias);
    ``r_i <- r_i + dr_i`` (Eq. 8). The reference halves the step (``step_scale = 0.5``); the paper
    writes 1.

    Args:
        hidden_channels: F.
        step_scale: factor on the displacement.

    Shapes:
        s: [N, F]; v: [N, 3, F] -> dr: [N, 3]
    """

    reads = ("s", "v", "pos", "refine")
    writes = ("pos",)

    def __init__(self, hidden_channels: int, step_scale: float = 1.0) -> None:
        super().__init__()
        self.step_scale = float(step_scale)
        self.gate_mlp = mlp([hidden_channels, hidden_channels, hidden_channels])
        self.vec_out = linear(hidden_channels, 1, bias=False)

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        alpha = torch.softmax(self.gate_mlp(s), dim=-1)
        dr = self.vec_out(v).squeeze(-1) + torch.einsum("nf,ndf->nd", alpha, v)
        return dr * self.step_scale

    def step(self, state: LayerState) -> None:
        if state.refine:
            state.pos = state.pos + self(state.s, state.v)
