"""EGNN baseline adapted to one-shot crystal relaxation (E3Relax paper, Appendix C)."""
from __future__ import annotations

from typing import Any, Literal, Optional

from torch import nn

from e3relax import keys
from e3relax.geometry import edge_vectors
from e3relax.model_base import RelaxModel, SymmetryLaws
from e3relax.nn.embedding import NUM_ELEMENTS
from e3relax.nn.egnn import EquivariantGraphConv, InitialEdgeAttributes
from e3relax.registry import HEADS, MODELS
from e3relax.types import RelaxOutput

_LATTICE_HEAD_BREAKS = (
    "the DeepRelax lattice head reads and writes Cartesian cell components, so the predicted cell "
    "does not rotate with the input; positions do (max error ~1e-15 in float64). Measured cell "
    "error (test_config, weights perturbed by 0.05, shared helper structures): {measured}"
)


def layer_cells(head, feats: list, data, every_layer: bool) -> list:
    """Cells from a lattice head for each layer's features (or the last layer's, repeated).

    Shapes:
        feats: T x [N, F] -> T x [B, 3, 3]
    """
    cell_u = data[keys.CELL_U]
    if every_layer:
        return [head(x, cell_u, data.batch, cell_u.shape[0]) for x in feats]
    return [head(feats[-1], cell_u, data.batch, cell_u.shape[0])] * len(feats)


def lattice_head_laws(head_spec: Any, measured: dict[str, str] | None = None) -> SymmetryLaws:
    """Symmetry laws of a baseline whose positions are E(3)-equivariant, given its lattice head.

    The DeepRelax head (the paper's choice for every baseline) breaks rotation and reflection of
    the cell; the ``equivariant_lattice`` head keeps them.

    Args:
        head_spec: the model's lattice-head spec.
        measured: property -> measured cell error, quoted in the reason.
    """
    name = head_spec if isinstance(head_spec, str) else dict(head_spec).get("name")
    if name == "equivariant_lattice":
        return SymmetryLaws()
    measured = measured or {}
    return SymmetryLaws(broken={
        prop: _LATTICE_HEAD_BREAKS.format(measured=measured.get(prop, "not recorded"))
        for prop in ("rotation", "reflection")
    })


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
    DeepRelax lattice head is not rotation/reflection-equivariant (declared in :meth:`laws`).

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
    """

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
    ) -> None:
        super().__init__()
        f = hidden_channels
        self.lattice_spec = lattice_head
        self.cell_every_layer = cell_every_layer
        self.embedding = nn.Embedding(NUM_ELEMENTS + 1, f)
        self.edge_attr = InitialEdgeAttributes(edge_basis, edge_type_channels=4 if edge_type_embedding else 0)
        edge_channels = self.edge_attr.num_channels
        self.layers = nn.ModuleList(
            EquivariantGraphConv(
                f, edge_channels, residual=residual, attention=attention, normalize=normalize,
                coords_agg=coords_agg, tanh=tanh,
            )
            for _ in range(num_layers)
        )
        self.lattice_head = HEADS.build(lattice_head, hidden_channels=f)

    @classmethod
    def test_config(cls) -> dict:
        return {"hidden_channels": 16, "num_layers": 2, "edge_basis": {"name": "expnorm_rbf", "num_rbf": 8, "cutoff": 6.0}}

    def laws(self) -> SymmetryLaws:
        return lattice_head_laws(self.lattice_spec, {"rotation": "56 A", "reflection": "49 A"})

    def forward(self, data) -> RelaxOutput:
        pos, cell_u = data[keys.POS_U], data[keys.CELL_U]
        edge_index, offsets, batch = data[keys.EDGE_INDEX], data[keys.CELL_OFFSETS], data.batch
        h = self.embedding(data[keys.Z])
        vec, dist = edge_vectors(pos, cell_u, edge_index, offsets, batch)
        edge_attr = self.edge_attr(dist, data[keys.EDGE_TYPE])
        positions, feats = [], []
        for k, layer in enumerate(self.layers):
            if k > 0:
                vec, _ = edge_vectors(pos, cell_u, edge_index, offsets, batch)
            h, pos = layer(h, pos, vec, edge_index, edge_attr)
            positions.append(pos)
            feats.append(h)
        return RelaxOutput(pos=positions, cell=layer_cells(self.lattice_head, feats, data, self.cell_every_layer))
