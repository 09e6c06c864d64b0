"""Atom position update from vector features (paper Eq. 5-8)."""
from __future__ import annotations

import torch
from torch import nn

from e3relax.model_base import scale_lr_
from e3relax.nn.common import Block, LayerState, linear, mlp
from e3relax.registry import BLOCKS


@BLOCKS.register("position_update")
class PositionUpdate(Block):
    """Equivariant displacement of each atom from its vector features.

    ``alpha_i = softmax_F(MLP_g(x_i))`` (``F -> F -> F``, paper Eq. 5-6);
    ``dr_i = step_scale * (W_p v_i + sum_f alpha_if v_i[:, f])`` (Eq. 7, ``W_p: F -> 1`` no bias);
    ``r_i <- r_i + dr_i`` (Eq. 8). The reference halves the step (``step_scale = 0.5``); the paper
    writes 1.

    Identity at initialisation (``identity_init``, default): the attention term carries a
    per-channel gate, ``dr_i = step_scale * (W_p v_i + sum_f g_f alpha_if v_i[:, f])``, and both
    last projections start at zero (``W_p = 0``, ``g = 0``), so ``dr = 0`` until the first optimiser
    step. Each of the F entries of ``W_p`` and ``g`` then moves by about the learning rate per Adam
    step, so the step grows F times faster than behind one scalar gate. ``False`` keeps the
    reference: PyTorch's default ``W_p`` and a constant ``g = 1`` (a buffer: the ungated Eq. 7). The
    zeroed projections train at ``ZERO_INIT_LR_SCALE`` times the run's learning rate. Checkpoints saved before
    the gate existed load with ``g = 1``, their forward.

    Args:
        hidden_channels: F.
        step_scale: factor on the displacement.
        identity_init: zero ``W_p`` and ``g`` (else the reference initialisation).

    Shapes:
        s: [N, F]; v: [N, 3, F] -> dr: [N, 3]
    """

    reads = ("s", "v", "pos", "refine")
    writes = ("pos",)

    def __init__(self, hidden_channels: int, step_scale: float = 1.0, identity_init: bool = True) -> None:
        super().__init__()
        self.step_scale = float(step_scale)
        self.gate_mlp = mlp([hidden_channels, hidden_channels, hidden_channels])
        self.vec_out = linear(hidden_channels, 1, bias=False)
        if identity_init:
            self.alpha_gate = nn.Parameter(torch.zeros(hidden_channels))
            nn.init.zeros_(self.vec_out.weight)
            scale_lr_(self.vec_out.weight)
            scale_lr_(self.alpha_gate)
        else:  # the reference's ungated step: a constant, not a parameter
            self.register_buffer("alpha_gate", torch.ones(hidden_channels))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "alpha_gate"
        if key not in state_dict and prefix + "vec_out.weight" in state_dict:  # saved before the gate: g = 1
            state_dict[key] = torch.ones_like(self.alpha_gate)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        alpha = torch.softmax(self.gate_mlp(s), dim=-1) * self.alpha_gate
        dr = self.vec_out(v).squeeze(-1) + torch.einsum("nf,ndf->nd", alpha, v)
        return dr * self.step_scale

    def step(self, state: LayerState) -> None:
        if state.refine:
            state.pos = state.pos + self(state.s, state.v)
