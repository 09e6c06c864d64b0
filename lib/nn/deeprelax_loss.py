"""DeepRelax training loss: Laplace NLL on both distance sets plus L1 on the cell (spec 2.4)."""
from __future__ import annotations

import math

import torch
from torch import nn

from e3relax import keys
from e3relax.geometry import edge_vectors
from e3relax.nn.deeprelax import (DISPLACE_EDGE_INDEX, DISPLACE_LOGB, DISPLACE_MU, RELAXED_CELL_OFFSETS,
                                  RELAXED_EDGE_INDEX, RELAXED_LOGB, RELAXED_MU)
from e3relax.registry import LOSSES
from e3relax.types import RelaxOutput

__all__ = ["laplace_nll", "LaplaceDistanceLoss"]


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
