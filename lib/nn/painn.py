"""PaiNN interaction stack assembled from the registered scalar-vector message and update blocks."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from e3relax.nn.common import Block
from e3relax.registry import BLOCKS

__all__ = ["PaiNNStack"]


@BLOCKS.register("painn_stack")
class PaiNNStack(Block):
    """``num_layers`` x (message, update) of PaiNN (Schuett, Unke, Gastegger, ICML 2021, Eq. 7-11).

    Each layer: ``s, v <- message(s, v, edge_feat, unit, edge_index)`` then ``s, v <- update(s, v)``;
    the blocks are registry specs (defaults: ``scalar_vector_message`` -- the OCP/E3Relax form of
    PaiNN's message -- and the original ``painn_update``), built with
    ``hidden_channels`` and ``num_rbf = edge_channels`` (the width of the edge features, which may
    be a radial basis or, for DeepRelax, ``[RBF || offset encoding]``).

    Args:
        hidden_channels: F.
        num_layers: number of interaction layers.
        edge_channels: width of the edge features fed to the message's filter.
        message, update: block specs.

    Shapes:
        s: [N, F], v: [N, 3, F], edge_feat: [E, K], unit: [E, 3] (neighbour -> centre),
        edge_index: [2, E]  ->  s: [N, F], v: [N, 3, F]
    """

    def __init__(self, hidden_channels: int, num_layers: int, edge_channels: int,
                 message: Any = "scalar_vector_message", update: Any = "painn_update") -> None:
        super().__init__()
        ctx = {"hidden_channels": hidden_channels, "num_rbf": edge_channels}
        self.messages = nn.ModuleList(BLOCKS.build(message, **ctx) for _ in range(num_layers))
        self.updates = nn.ModuleList(BLOCKS.build(update, **ctx) for _ in range(num_layers))

    def forward(self, s: torch.Tensor, v: torch.Tensor, edge_feat: torch.Tensor, unit: torch.Tensor,
                edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for message, update in zip(self.messages, self.updates):
            s, v = message(s, v, edge_feat, unit, edge_index)
            s, v = update(s, v)
        return s, v
