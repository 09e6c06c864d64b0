"""HEGNN baseline adapted to one-shot crystal relaxation (E3Relax paper, Appendix C)."""
from __future__ import annotations

from typing import Any, Optional

from torch import nn

from e3relax.model_base import RelaxModel, scale_lr_
from e3relax.nn.embedding import NUM_ELEMENTS
from e3relax.registry import BLOCKS, HEADS, MODELS
from e3relax.types import RelaxOutput


@MODELS.register("hegnn")
class HEGNN(RelaxModel):
    """HEGNN (Cen et al., "Are High-Degree Representations Really Unnecessary in Equivariant Graph
    Neural Networks?", NeurIPS 2024): EGNN plus high-degree steerable features ``chi`` (l = 0..L,
    one copy per degree) initialised from the neighbourhood with e3nn spherical harmonics, coupled to
    the messages through within-degree inner products, updated by per-degree invariant scalings.

    Kept from the original (``GLAD-RUC/HEGNN``, ``models/HEGNN.py``): ``SH_INIT`` initialisation
    (mean over neighbours), the message MLP on ``[h_i, h_j, e_ij, |x_ij|^2, z_ij]``, mean
    aggregation of messages, coordinates and ``chi``, the non-residual feature update, defaults
    L = 2, F = 64, 4 layers. Adapted for crystals: periodic relative vectors
    ``x_ij = r_i - r_j - k_ij L_u`` recomputed every layer with the input cell; the N-body velocity
    term is dropped; ``normalize`` (unit ``x_ij`` in the coordinate update, EGNN's stability option)
    is on by default; edge attributes are a radial basis of the initial edge length and the edge
    type. Every layer emits positions; the cell comes from the shared lattice head on each layer's h.

    Symmetry: positions exactly O(3)-, translation-, permutation- and wrap-equivariant; the
    DeepRelax lattice head breaks rotation/reflection of the cell (its own declaration).

    Args:
        hidden_channels: F.
        num_layers: T.
        lmax: L, highest degree of ``chi``.
        edge_basis: radial-basis spec for the edge attributes (``None``: none).
        edge_type_embedding: append a learned edge-type embedding to the edge attributes.
        normalize: see :class:`~e3relax.nn.hegnn.HEGNNLayer`.
        coord_init_gain: see :class:`~e3relax.nn.hegnn.HEGNNLayer`.
        lattice_head: spec of a lattice head in ``HEADS``.
        cell_every_layer: apply the lattice head to every layer's features.
        identity_init: zero the last linear of every ``phi_x``, so every layer predicts its input
            at initialisation (overrides ``coord_init_gain``).
    """

    measured_errors = {"rotation": "6.5 A (cell; positions ~1e-15)", "reflection": "4.1 A (cell; positions ~1e-15)"}

    def __init__(
        self,
        hidden_channels: int = 64,
        num_layers: int = 4,
        lmax: int = 2,
        edge_basis: Optional[dict] = None,
        edge_type_embedding: bool = True,
        normalize: bool = True,
        coord_init_gain: Optional[float] = None,
        lattice_head: Any = "deeprelax_lattice",
        cell_every_layer: bool = True,
        identity_init: bool = True,
    ) -> None:
        super().__init__()
        f = hidden_channels
        self.cell_every_layer = cell_every_layer
        self.embedding = nn.Embedding(NUM_ELEMENTS + 1, f)
        self.edge_attr = BLOCKS.build({"name": "initial_edge_attributes", "basis": edge_basis,
                                       "edge_type_channels": 4 if edge_type_embedding else 0})
        c = self.edge_attr.num_channels
        self.sh_init = BLOCKS.build({"name": "hegnn_init", "hidden_channels": f, "lmax": lmax, "edge_channels": c})
        layer = {"name": "hegnn_layer", "hidden_channels": f, "lmax": lmax, "edge_channels": c,
                 "normalize": normalize, "coord_init_gain": coord_init_gain}
        self.layers = nn.ModuleList(BLOCKS.build(layer) for _ in range(num_layers))
        self.lattice_head = HEADS.build(lattice_head, hidden_channels=f)
        if identity_init:
            for layer in self.layers:
                scale_lr_(nn.init.zeros_(layer.coord[-1].weight))
                scale_lr_(nn.init.zeros_(layer.coord[-1].bias))

    @classmethod
    def test_config(cls) -> dict:
        return {"hidden_channels": 16, "num_layers": 2, "lmax": 2,
                "edge_basis": {"name": "expnorm_rbf", "num_rbf": 8, "cutoff": 6.0}}

    def forward(self, data) -> RelaxOutput:
        inp = self.inputs(data)
        pos, vec = inp.pos, inp.vec
        h = self.embedding(inp.z)
        edge_attr = self.edge_attr(inp.dist, inp.edge_type)
        chi = self.sh_init(h, vec, inp.edge_index, edge_attr)
        positions, feats = [], []
        for k, layer in enumerate(self.layers):
            if k > 0:
                vec, _ = inp.edge_vectors(pos)
            h, pos, chi = layer(h, pos, chi, vec, inp.edge_index, edge_attr)
            positions.append(pos)
            feats.append(h)
        cells = self.lattice_head.per_layer(feats, inp.cell, inp.batch, inp.num_graphs, self.cell_every_layer)
        return RelaxOutput(pos=positions, cell=cells)
