"""Initial features of atom nodes and lattice nodes (paper Appendix A, spec 1.3)."""
from __future__ import annotations

import math

import torch
from torch import nn

from e3relax.nn.common import Block, LayerState
from e3relax.registry import BLOCKS

NUM_ELEMENTS = 118


@BLOCKS.register("atom_embedding")
class AtomEmbedding(Block):
    """Atom scalar features from the atomic number; vector features start at zero (paper Appendix A).

    ``x_i^(0) = E[Z_i]`` with ``E`` a ``(num_elements + 1) x F`` table indexed by Z directly
    (so Z = 1..118 all fit; the reference's 118 rows overflow at Z = 118), initialised
    uniform(-sqrt 3, sqrt 3); ``v_i^(0) = 0``.

    Shapes:
        z: [N] long -> s: [N, F], v: [N, 3, F]
    """

    reads = ("z",)
    writes = ("s", "v")

    def __init__(self, hidden_channels: int, num_elements: int = NUM_ELEMENTS) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.num_elements = num_elements
        self.table = nn.Embedding(num_elements + 1, hidden_channels)
        nn.init.uniform_(self.table.weight, -math.sqrt(3.0), math.sqrt(3.0))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if z.numel() and (int(z.min()) < 0 or int(z.max()) > self.num_elements):
            raise ValueError(
                f"atom_embedding: atomic numbers must lie in 1..{self.num_elements}, got "
                f"{int(z.min())}..{int(z.max())}"
            )
        s = self.table(z)
        return s, s.new_zeros(s.shape[0], 3, s.shape[1])

    def step(self, state: LayerState) -> None:
        state.s, state.v = self(state.z)


@BLOCKS.register("lattice_node_embedding")
class LatticeNodeEmbedding(Block):
    """Three lattice nodes per structure, one learned scalar vector per lattice direction c (Appendix A).

    ``y_c^(0) = e_c`` (one row per c of a ``[3, F]`` table, N(0, 1) as the reference's three
    ``Embedding(1, F)``); ``ybar_c^(0) = 0``.

    Shapes:
        num_graphs B -> y: [B, 3, F], ybar: [B, 3, 3, F]
    """

    reads = ("num_graphs", "pos")
    writes = ("y", "ybar")

    def __init__(self, hidden_channels: int) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.weight = nn.Parameter(torch.randn(3, hidden_channels))

    def forward(self, num_graphs: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.weight[None].expand(num_graphs, -1, -1)
        return y, y.new_zeros(num_graphs, 3, 3, self.hidden_channels)

    def step(self, state: LayerState) -> None:
        state.y, state.ybar = self(state.num_graphs)
        state.y = state.y.to(state.pos.dtype)
        state.ybar = state.ybar.to(state.pos.dtype)
