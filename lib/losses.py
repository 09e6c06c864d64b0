"""Every training loss of the toolkit (registered in ``LOSSES``).

* ``layerwise``: layer-wise supervision of positions and cells (E3Relax paper Eq. 19; every
  coordinate-predicting model);
* ``laplace_distance`` (alias ``deeprelax``): DeepRelax's Laplace NLL on predicted distances plus
  L1 on the cell (spec 2.4).
"""
from __future__ import annotations

from typing import Optional, Sequence

import math

import torch
from torch import nn

from e3relax import keys
from e3relax.geometry import edge_vectors
from e3relax.nn.deeprelax import (DISPLACE_EDGE_INDEX, DISPLACE_LOGB, DISPLACE_MU, RELAXED_CELL_OFFSETS,
                                  RELAXED_EDGE_INDEX, RELAXED_LOGB, RELAXED_MU)
from e3relax.registry import LOSSES
from e3relax.types import RelaxOutput

__all__ = ["LayerwiseLoss", "laplace_nll", "LaplaceDistanceLoss"]


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


def laplace_nll(mu: torch.Tensor, log_b: torch.Tensor, target: torch.Tensor, log_b_min: float = -3.0,
                log_b_max: float = 3.0) -> torch.Tensor:
    """``mean(|mu - d| / b + log b + log 2)`` with ``log b`` clamped to [log_b_min, log_b_max].

    Shapes: mu, log_b, target: [E] -> []
    """
    log_b = torch.clamp(log_b, log_b_min, log_b_max)
    return ((mu - target).abs() * torch.exp(-log_b) + log_b + math.log(2.0)).mean()


@LOSSES.register("laplace_distance", aliases=("deeprelax",))
class LaplaceDistanceLoss(nn.Module):
    """DeepRelax loss: ``NLL_displace + NLL_relaxed + cell_weight * L1(L_hat, L~)`` (equal weights).

    Targets, from the relaxed labels: displace ``|r~_j - r_u_i|`` on intra-cell edges, relaxed
    ``|r~_j + k L~ - r~_i|`` on all edges. Reads the predictions from ``output.extras`` (keys in
    :mod:`e3relax.nn.deeprelax`) and the last layer's cell.

    Args:
        log_b_min, log_b_max: clamp of the log-scale in training (reference: -3, 3).
        cell_weight: factor on the cell L1 term.

    Shapes:
        output: RelaxOutput with the DeepRelax extras; data with pos_u, pos_r [N, 3], cell_r [B, 3, 3]
        -> (total [], {"nll_displace", "nll_relaxed", "cell", "mae_displace", "mae_relaxed"})
    """

    def __init__(self, log_b_min: float = -3.0, log_b_max: float = 3.0, cell_weight: float = 1.0) -> None:
        super().__init__()
        self.log_b_min, self.log_b_max, self.cell_weight = float(log_b_min), float(log_b_max), float(cell_weight)

    @staticmethod
    def targets(output: RelaxOutput, data) -> tuple[torch.Tensor, torch.Tensor]:
        """True displace and relaxed distances for the model's edge sets. Shapes: -> [E_d], [E]."""
        pos_u, pos_r = data[keys.POS_U], data[keys.POS_R]
        cell_r = data[keys.CELL_R].reshape(-1, 3, 3)
        batch = getattr(data, keys.BATCH, None)
        batch = torch.zeros(pos_u.shape[0], dtype=torch.long, device=pos_u.device) if batch is None else batch
        jd, id_ = output.extras[DISPLACE_EDGE_INDEX]
        d_disp = torch.linalg.vector_norm(pos_r[jd] - pos_u[id_], dim=-1)
        _, d_rel = edge_vectors(pos_r, cell_r, output.extras[RELAXED_EDGE_INDEX],
                                output.extras[RELAXED_CELL_OFFSETS], batch)
        return d_disp, d_rel

    def forward(self, output: RelaxOutput, data) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        missing = [k for k in (DISPLACE_MU, DISPLACE_LOGB, RELAXED_MU, RELAXED_LOGB) if k not in output.extras]
        if missing:
            raise KeyError(f"laplace_distance loss: model output has no extras {missing}; "
                           "this loss needs a model that predicts distances (deeprelax)")
        d_disp, d_rel = self.targets(output, data)
        ex = output.extras
        nll_d = laplace_nll(ex[DISPLACE_MU], ex[DISPLACE_LOGB], d_disp, self.log_b_min, self.log_b_max)
        nll_r = laplace_nll(ex[RELAXED_MU], ex[RELAXED_LOGB], d_rel, self.log_b_min, self.log_b_max)
        cell = (output.final_cell - data[keys.CELL_R].reshape(-1, 3, 3)).abs().mean()
        total = nll_d + nll_r + self.cell_weight * cell
        terms = {"nll_displace": nll_d.detach(), "nll_relaxed": nll_r.detach(), "cell": cell.detach(),
                 "mae_displace": (ex[DISPLACE_MU] - d_disp).abs().mean().detach(),
                 "mae_relaxed": (ex[RELAXED_MU] - d_rel).abs().mean().detach()}
        return total, terms
