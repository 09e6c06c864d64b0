"""The Dummy baseline: predicts the unrelaxed structure."""
from __future__ import annotations

from e3relax.model_base import RelaxModel
from e3relax.types import RelaxOutput
from e3relax.registry import MODELS


@MODELS.register("dummy")
class Dummy(RelaxModel):
    """Returns ``(pos_u, cell_u)`` as a one-layer prediction (the paper's Dummy rows).

    Obeys every law exactly: rotation, reflection, permutation, Cartesian translation, wrap with
    the input cell, batch consistency.

    Shapes:
        data -> RelaxOutput(pos=[pos_u [N, 3]], cell=[cell_u [B, 3, 3]])
    """

    def forward(self, data) -> RelaxOutput:
        inp = self.inputs(data, geometry=False)
        return RelaxOutput(pos=[inp.pos], cell=[inp.cell])
