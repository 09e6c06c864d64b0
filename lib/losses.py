"""Training losses (registered in ``LOSSES``)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from e3relax import keys
from e3relax.registry import LOSSES
from e3relax.types import RelaxOutput


@LOSSES.register("layerwise")
class LayerwiseLoss(nn.Module):
    """Layer-wise supervision of every refinement step (paper Eq. 19, reference ``train.py``).

    ``loss = sum_t w_t * (pos_weight * P_t + cell_weight * C_t)`` with
    ``P_t = mean_i |r_i^(t) - r~_i|_2`` (``pos_term="euclidean"``, the reference) or
    ``mean_{i,xyz} |r^(t) - r~|`` (``"l1"``, as the paper writes), and
    ``C_t = mean_{b,9} |L^(t) - L~|`` (L1). Means run over all atoms / cells of the batch.

    Args:
        layer_weights: ``w_t`` per emitted layer (default: all 1). Its length must equal the number
            of layers the model emits.
        pos_term: ``"euclidean"`` or ``"l1"``.
        pos_weight: factor on the position terms.
        cell_weight: factor on the cell terms.

    Shapes:
        output: RelaxOutput(pos T x [N, 3], cell T x [B, 3, 3]); data with pos_r [N, 3], cell_r [B, 3, 3]
        -> (total [], {"pos_t": [], "cell_t": [] for each layer t})
    """

    def __init__(
        self,
        layer_weights: Optional[Sequence[float]] = None,
        pos_term: str = "euclidean",
        pos_weight: float = 1.0,
        cell_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if pos_term not in ("euclidean", "l1"):
            raise ValueError(f"layerwise loss: pos_term must be 'euclidean' or 'l1', got '{pos_term}'")
        self.layer_weights = None if layer_weights is None else [float(w) for w in layer_weights]
        self.pos_term = pos_term
        self.pos_weight = float(pos_weight)
        self.cell_weight = float(cell_weight)

    def position_error(self, pos: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = pos - target
        if self.pos_term == "euclidean":
            return torch.linalg.vector_norm(diff, dim=-1).mean()
        return diff.abs().mean()

    def forward(self, output: RelaxOutput, data) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target_pos = data[keys.POS_R]
        target_cell = data[keys.CELL_R].reshape(-1, 3, 3)
        weights = self.layer_weights or [1.0] * output.num_layers
        if len(weights) != output.num_layers:
            raise ValueError(
                f"layerwise loss: {len(weights)} layer_weights given but the model emitted "
                f"{output.num_layers} layers; give one weight per emitted layer"
            )
        total = target_pos.new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        for t, (w, pos, cell) in enumerate(zip(weights, output.pos, output.cell)):
            p = self.position_error(pos, target_pos)
            c = (cell - target_cell).abs().mean()
            terms[f"pos_{t}"], terms[f"cell_{t}"] = p.detach(), c.detach()
            total = total + w * (self.pos_weight * p + self.cell_weight * c)
        return total, terms
