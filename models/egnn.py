"""EGNN baseline adapted to one-shot crystal relaxation (E3Relax paper, Appendix C)."""
from __future__ import annotations

from typing import Any, Literal, Optional

from torch import nn

from e3relax.model_base import RelaxModel, scale_lr_
from e3relax.nn.embedding import NUM_ELEMENTS
from e3relax.registry import BLOCKS, HEADS, MODELS
from e3relax.types import RelaxOutput

@MODELS.register("egnn")
class EGNN(RelaxModel):
    """EGNN (Satorras, Hoogeboom, Welling, "E(n) Equivariant Graph Neural Networks", ICML 2021).

    Kept from the original (``vgsatorras/egnn``, ``egnn_clean.py``): the E_GCL layer with residual
    feature update, SiLU, mean coordinate aggregation, coordinate-MLP output initialised with gain
    0.001, coordinates updated in every layer. Adapted for crystals: every relative vector includes
    the periodic image, ``x_ij = r_i - r_j - k_ij L_u``, recomputed from the current positions in
    every layer with the input cell; ``normalize`` is on by default (the authors' stability option;
    crystal edges are long); an optional edge attribute is a radial basis of the *initial* edge
    length. Each layer's coordinates are one entry of the output (layer-wise supervision); the cell
    of each layer comes from the shared lattice head (DeepRelax head by default) applied to that
    layer's features. Nothing is sized down except through the constructor (CPU config: F = 32).

    Symmetry: positions are exactly E(3)-, permutation- and wrap-equivariant (input cell). The
    DeepRelax lattice head is not rotation/reflection-equivariant (its own declaration).

    Args:
        hidden_channels: F.
        num_layers: number of E_GCL layers T (each emits positions and a cell).
        edge_basis: spec of a radial basis block for ``a_ij`` from the initial edge length, e.g.
            ``{"name": "expnorm_rbf", "num_rbf": 16, "cutoff": 6.0}``; ``None`` for no edge attribute.
        edge_type_embedding: append a learned embedding of the edge type (radius / self-image).
        residual, attention, normalize, coords_agg, tanh: passed to every
            :class:`~e3relax.nn.egnn.EquivariantGraphConv`.
        lattice_head: spec of a lattice head in ``HEADS``.
        cell_every_layer: apply the lattice head to every layer's features (else only the last,
            repeated for earlier layers).
        identity_init: zero the last linear of every ``phi_x`` (instead of the authors' gain 0.001),
            so every layer predicts its input at initialisation.
    """

    measured_errors = {"rotation": "56 A (cell; positions ~1e-15)", "reflection": "49 A (cell; positions ~1e-15)"}

    def __init__(
        self,
        hidden_channels: int = 64,
        num_layers: int = 4,
        edge_basis: Optional[dict] = None,
        edge_type_embedding: bool = True,
        residual: bool = True,
        attention: bool = False,
        normalize: bool = True,
        coords_agg: Literal["mean", "sum"] = "mean",
        tanh: bool = False,
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
        layer = {"name": "egnn_layer", "hidden_channels": f, "edge_channels": self.edge_attr.num_channels,
                 "residual": residual, "attention": attention, "normalize": normalize, "coords_agg": coords_agg,
                 "tanh": tanh}
        self.layers = nn.ModuleList(BLOCKS.build(layer) for _ in range(num_layers))
        self.lattice_head = HEADS.build(lattice_head, hidden_channels=f)
        if identity_init:  # the authors' gain 0.001 still moves atoms by ~1e-3 A per layer at F = 512
            for layer in self.layers:
                scale_lr_(nn.init.zeros_(layer.coord_mlp[-1].weight))

    @classmethod
    def test_config(cls) -> dict:
        return {"hidden_channels": 16, "num_layers": 2, "edge_basis": {"name": "expnorm_rbf", "num_rbf": 8, "cutoff": 6.0}}

    def forward(self, data) -> RelaxOutput:
        inp = self.inputs(data)
        pos, vec = inp.pos, inp.vec
        h = self.embedding(inp.z)
        edge_attr = self.edge_attr(inp.dist, inp.edge_type)
        positions, feats = [], []
        for k, layer in enumerate(self.layers):
            if k > 0:
                vec, _ = inp.edge_vectors(pos)
            h, pos = layer(h, pos, vec, inp.edge_index, edge_attr)
            positions.append(pos)
            feats.append(h)
        cells = self.lattice_head.per_layer(feats, inp.cell, inp.batch, inp.num_graphs, self.cell_every_layer)
        return RelaxOutput(pos=positions, cell=cells)
