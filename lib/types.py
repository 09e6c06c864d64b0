"""Small output types shared by models, losses, engines and the predictor."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class RelaxOutput:
    """A model's prediction for a batch, one entry per layer (refinement step).

    Attributes:
        pos: per-layer positions, each ``[N, 3]`` (Angstrom), last entry = the prediction.
        cell: per-layer cells, each ``[B, 3, 3]``, rows = lattice vectors.
        extras: model-specific tensors (uncertainties, predicted distances, ...).
    """

    pos: list[torch.Tensor]
    cell: list[torch.Tensor]
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.pos) != len(self.cell):
            raise ValueError(f"RelaxOutput: {len(self.pos)} position layers but {len(self.cell)} cell layers")
        if not self.pos:
            raise ValueError("RelaxOutput needs at least one layer")

    @property
    def num_layers(self) -> int:
        return len(self.pos)

    @property
    def final_pos(self) -> torch.Tensor:
        return self.pos[-1]

    @property
    def final_cell(self) -> torch.Tensor:
        return self.cell[-1]
