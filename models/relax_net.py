"""A generic relaxation network: a stack of registered blocks per layer, configured from YAML.

Example (the E3Relax layer written as a stack)::

    model:
      name: relax_net
      hidden_channels: 128
      num_layers: 4
      num_rbf: 64
      radial: {name: gaussian_rbf, cutoff: 30.0}
      embedding: atom_embedding
      lattice_embedding: lattice_node_embedding
      layer: [lattice_atom_interaction, scalar_vector_message, tanh_self_update,
              position_update, lattice_node_update, {name: lattice_update, affine_positions: true}]

Every block is built with ``BLOCKS.build(spec, hidden_channels=..., num_rbf=...)`` and must have a
``step(state: LayerState)`` method that updates the state in place.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

from e3relax import keys
from e3relax.geometry import edge_vectors, to_cartesian, to_fractional
from e3relax.model_base import RelaxModel, SymmetryLaws
from e3relax.nn.common import LayerState, kernel
from e3relax.nn.lattice import LatticeAtomInteraction, LatticeUpdate
from e3relax.registry import BLOCKS, HEADS, MODELS
from e3relax.types import RelaxOutput

#: Strain residual of Cartesian-displacement models whose cell changes (spec 5, FIX1+FIX2 column).
#: Registered cell heads whose output rotates with the input cell (others are treated as not equivariant
#: unless they set a ``rotation_equivariant = True`` class attribute).
EQUIVARIANT_HEADS = {"equivariant_lattice"}
WRAP_STRAIN_NOTE = ("wrap is exact only for a fixed cell; a changing cell leaves a strain residual "
                    "(measured 1.3e-2 on the test fixtures, output change 7.9e-2)")


@kernel
def _edge_geometry(pos, cell, edge_index, cell_offsets, batch):
    """Unit vectors ``-r_ij / |r_ij|`` [E, 3] and lengths [E] of the current geometry."""
    vec, dist = edge_vectors(pos, cell, edge_index, cell_offsets, batch)
    return -vec / dist[:, None], dist


def derive_laws(blocks: Sequence[nn.Module], cell_head: Optional[nn.Module], affine: bool) -> SymmetryLaws:
    """The symmetry laws implied by a stack's blocks (see :class:`~e3relax.model_base.SymmetryLaws`)."""
    broken: dict[str, str] = {}
    updates = [b for b in blocks if isinstance(b, LatticeUpdate)]
    modes = {b.geometry_mode for b in blocks if isinstance(b, LatticeAtomInteraction)}
    rotation = not any(b.transpose for b in updates)
    if not rotation:
        broken["rotation"] = broken["reflection"] = "lattice update added as columns (transposed)"
    head_ok = cell_head is None or getattr(
        cell_head, "rotation_equivariant", getattr(type(cell_head), "registry_name", "") in EQUIVARIANT_HEADS)
    if not head_ok:
        rotation = False
        broken.setdefault("rotation", "cell head reads Cartesian cell components")
        broken.setdefault("reflection", broken["rotation"])
    cell_changes = bool(updates) or cell_head is not None
    affine = affine or any(b.affine_positions for b in updates)
    translation, wrap = "cartesian", "input_cell"
    if "tip_absolute" in modes:
        translation, wrap = "none", "none"
        broken["translation"] = broken["wrap"] = "lattice-atom geometry uses absolute positions"
    else:
        if affine:
            translation = "fractional"
        if "centroid" in modes:
            wrap = "none"
            broken["wrap"] = "centroid lattice-atom geometry depends on the stored image of each atom (measured 9.4e-1)"
        elif affine:
            wrap = "predicted_cell"
        elif cell_changes:
            wrap = "none"
            broken["wrap"] = WRAP_STRAIN_NOTE
    return SymmetryLaws(rotation=rotation, reflection=rotation, translation=translation, wrap=wrap, broken=broken)


@MODELS.register("relax_net")
class RelaxNet(RelaxModel):
    """Generic stack: embeddings, then ``num_layers`` layers of registered blocks, then optional heads.

    Each layer recomputes edge vectors, unit vectors ``u_ji = -r_ij / |r_ij|`` and radial bases from
    the current positions and cell, runs its blocks in order, then (when ``heads["cell"]`` is set)
    replaces the cell by the head's prediction from the pooled features and ``cell_u``. Positions and
    cells are emitted after every refining layer.

    Args:
        hidden_channels: F, passed to every block that accepts it.
        num_layers: T (used when ``layers`` is not given).
        num_rbf: K, passed to every block that accepts it.
        radial: radial-basis block spec.
        embedding: atom embedding block spec.
        lattice_embedding: lattice-node embedding spec, or None for a stack without lattice nodes.
        layer: block specs of one layer, repeated ``num_layers`` times (fresh parameters each time).
        layers: explicit per-layer lists of block specs (overrides ``layer`` / ``num_layers``).
        heads: ``{"cell": head_spec}``; a cell head built from ``HEADS``, called as
            ``head(s [N, F], cell_u [B, 3, 3], batch [N], num_graphs) -> cell [B, 3, 3]``.
        refine: ``"all"`` (progressive refinement, output every layer) or ``"last"`` (positions and
            cell updated only in the last layer, a single output).
        self_image_edges: keep edges of type ``keys.EDGE_SELF_IMAGE``; False drops them at run time.
        affine_head_positions: carry atoms with the cell head's strain (``r <- r L^-1 L_new``).

    Shapes:
        data: Batch with pos_u [N, 3], cell_u [B, 3, 3], z [N], edge_index [2, E], cell_offsets [E, 3],
        edge_type [E], batch [N] -> RelaxOutput(pos T x [N, 3], cell T x [B, 3, 3])
    """

    def __init__(
        self,
        hidden_channels: int = 128,
        num_layers: int = 4,
        num_rbf: int = 64,
        radial: Any = None,
        embedding: Any = "atom_embedding",
        lattice_embedding: Any = "lattice_node_embedding",
        layer: Optional[Sequence[Any]] = None,
        layers: Optional[Sequence[Sequence[Any]]] = None,
        heads: Optional[dict] = None,
        refine: str = "all",
        self_image_edges: bool = True,
        affine_head_positions: bool = False,
    ) -> None:
        super().__init__()
        if refine not in ("all", "last"):
            raise ValueError(f"relax_net: refine must be 'all' or 'last', got '{refine}'")
        if layers is None:
            if layer is None:
                raise ValueError("relax_net: give 'layer' (one layer's block specs) or 'layers' (one list per layer)")
            layers = [list(layer)] * num_layers
        ctx = {"hidden_channels": hidden_channels, "num_rbf": num_rbf}
        radial = radial if radial is not None else {"name": "gaussian_rbf", "cutoff": 30.0}
        self.radial = BLOCKS.build(radial, **ctx)
        self.embedding = BLOCKS.build(embedding, **ctx)
        self.lattice_embedding = BLOCKS.build(lattice_embedding, **ctx) if lattice_embedding else None
        self.layers = nn.ModuleList(nn.ModuleList(BLOCKS.build(b, **ctx) for b in specs) for specs in layers)
        heads = dict(heads or {})
        unknown = sorted(set(heads) - {"cell"})
        if unknown:
            raise ValueError(f"relax_net: unknown head slot(s) {unknown}; supported: cell")
        self.cell_head = HEADS.build(heads["cell"], **ctx) if heads.get("cell") else None
        self.refine = refine
        self.self_image_edges = self_image_edges
        self.affine_head_positions = affine_head_positions
        for t, blocks in enumerate(self.layers):
            for b in blocks:
                if not hasattr(b, "step"):
                    raise ValueError(f"relax_net: block {type(b).__name__} in layer {t} has no step(state) method")

    @classmethod
    def test_config(cls) -> dict:
        return {
            "hidden_channels": 8, "num_layers": 2, "num_rbf": 6,
            "layer": ["lattice_atom_interaction", "scalar_vector_message", "tanh_self_update",
                      "position_update", "lattice_node_update", {"name": "lattice_update", "affine_positions": True}],
        }

    def laws(self) -> SymmetryLaws:
        blocks = [b for layer in self.layers for b in layer]
        return derive_laws(blocks, self.cell_head, self.affine_head_positions)

    def _edges(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        edge_index, offsets = data[keys.EDGE_INDEX], data[keys.CELL_OFFSETS]
        if not self.self_image_edges:
            keep = data[keys.EDGE_TYPE] != keys.EDGE_SELF_IMAGE
            edge_index, offsets = edge_index[:, keep], offsets[keep]
        return edge_index, offsets

    def initial_state(self, data) -> LayerState:
        pos_u, cell_u = data[keys.POS_U], data[keys.CELL_U].reshape(-1, 3, 3)
        batch = data.batch if getattr(data, "batch", None) is not None else torch.zeros(
            pos_u.shape[0], dtype=torch.long, device=pos_u.device)
        edge_index, offsets = self._edges(data)
        state = LayerState(
            pos=pos_u, cell=cell_u, pos_u=pos_u, cell_u=cell_u, batch=batch, num_graphs=cell_u.shape[0],
            z=data[keys.Z].long(), edge_index=edge_index, cell_offsets=offsets, radial=self.radial,
        )
        self.embedding.step(state)
        if self.lattice_embedding is not None:
            self.lattice_embedding.step(state)
        return state

    def update_geometry(self, state: LayerState) -> None:
        """Edge radial bases and unit vectors (neighbour -> centre) from the current pos and cell."""
        state.edge_unit, dist = _edge_geometry(state.pos, state.cell, state.edge_index, state.cell_offsets,
                                               state.batch)
        state.edge_rbf = self.radial(dist)

    def apply_cell_head(self, state: LayerState) -> None:
        new_cell = self.cell_head(state.s, state.cell_u, state.batch, state.num_graphs)
        if self.affine_head_positions:
            state.pos = to_cartesian(to_fractional(state.pos, state.cell, state.batch), new_cell, state.batch)
        state.cell = new_cell

    def forward(self, data) -> RelaxOutput:
        state = self.initial_state(data)
        pos_out, cell_out = [], []
        last = len(self.layers) - 1
        for t, blocks in enumerate(self.layers):
            state.refine = self.refine == "all" or t == last
            self.update_geometry(state)
            for block in blocks:
                block.step(state)
            if state.refine:
                if self.cell_head is not None:
                    self.apply_cell_head(state)
                pos_out.append(state.pos)
                cell_out.append(state.cell)
        return RelaxOutput(pos=pos_out, cell=cell_out)
