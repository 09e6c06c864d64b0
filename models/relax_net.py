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
``step(state: LayerState)`` method that updates the state in place. Blocks declare the state fields
they read and write; the stack checks when it is built that each block's inputs are written by an
earlier one. Its symmetry laws are composed from its blocks' and head's declarations.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from torch import nn

from e3relax.geometry import edge_vectors, to_cartesian, to_fractional
from e3relax.model_base import RelaxModel
from e3relax.nn.common import PROVIDED_FIELDS, LayerState, kernel
from e3relax.nn.lattice import ATOMS_RIDE_CELL, CELL_MOVES_ATOMS_STAY
from e3relax.registry import BLOCKS, HEADS, MODELS
from e3relax.types import RelaxOutput

@kernel
def _edge_geometry(pos, cell, edge_index, cell_offsets, batch):
    """Unit vectors ``-r_ij / |r_ij|`` [E, 3] and lengths [E] of the current geometry."""
    vec, dist = edge_vectors(pos, cell, edge_index, cell_offsets, batch)
    return -vec / dist[:, None], dist


def check_state_fields(stages: Sequence[tuple[str, nn.Module]]) -> None:
    """Fail unless every block reads only :class:`LayerState` fields written before it.

    Blocks declare ``reads`` / ``writes`` (:class:`~e3relax.nn.common.Block`); a block with
    ``reads = None`` (undeclared, e.g. a user's plain module) is not checked.

    Args:
        stages: ``(where, block)`` in the order the stack runs them.

    Raises:
        ValueError: naming the block, the missing fields and the registered blocks that write them.
    """
    known = {f.name for f in dataclasses.fields(LayerState)}
    available = set(PROVIDED_FIELDS)
    for where, block in stages:
        reads = getattr(block, "reads", None)
        for decl in (reads or ()), getattr(block, "writes", ()):
            unknown = sorted(set(decl) - known)
            if unknown:
                raise ValueError(f"relax_net: {where} ({type(block).__name__}) declares unknown LayerState "
                                 f"field(s) {', '.join(unknown)}; fields: {', '.join(sorted(known))}")
        missing = [f for f in (reads or ()) if f not in available]
        if missing:
            writers = sorted(n for n in BLOCKS.names() if set(missing) & set(getattr(BLOCKS.get(n), "writes", ())))
            raise ValueError(
                f"relax_net: {where} ({type(block).__name__}) reads {', '.join(missing)}, which no earlier "
                f"block writes. Add a block that writes them before it (registered: {', '.join(writers) or 'none'}; "
                f"lattice-node fields y, ybar come from lattice_embedding: lattice_node_embedding) or remove it."
            )
        available |= set(getattr(block, "writes", ()))


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
        self_image_edges: False drops, at run time, every edge from an atom to its own periodic
            image (the self-image edges and any radius edge ``i -> i + k L``).
        affine_head_positions: carry atoms with the cell head's strain (``r <- r L^-1 L_new``).

    Shapes:
        data: Batch with pos_u [N, 3], cell_u [B, 3, 3], z [N], edge_index [2, E], cell_offsets [E, 3],
        edge_type [E], batch [N] -> RelaxOutput(pos T x [N, 3], cell T x [B, 3, 3])
    """

    #: how atoms follow the cell head's cell (``head_carries_atoms``: None without a cell head)
    symmetry_options = {"head_carries_atoms": {True: ATOMS_RIDE_CELL, False: CELL_MOVES_ATOMS_STAY}}

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
        self.head_carries_atoms = None if self.cell_head is None else bool(affine_head_positions)
        stages = [("embedding", self.embedding)]
        if self.lattice_embedding is not None:
            stages.append(("lattice_embedding", self.lattice_embedding))
        for t, blocks in enumerate(self.layers):
            for k, b in enumerate(blocks):
                if not hasattr(b, "step"):
                    raise ValueError(f"relax_net: block {type(b).__name__} in layer {t} has no step(state) method")
                stages.append((f"layer {t} block {k} '{getattr(b, 'registry_name', type(b).__name__)}'", b))
        check_state_fields(stages)

    @classmethod
    def test_config(cls) -> dict:
        return {
            "hidden_channels": 8, "num_layers": 2, "num_rbf": 6,
            "layer": ["lattice_atom_interaction", "scalar_vector_message", "tanh_self_update",
                      "position_update", "lattice_node_update", {"name": "lattice_update", "affine_positions": True}],
        }

    def initial_state(self, data) -> LayerState:
        inp = self.inputs(data, self_image_edges=self.self_image_edges, geometry=False)
        state = LayerState(
            pos=inp.pos, cell=inp.cell, pos_u=inp.pos, cell_u=inp.cell, batch=inp.batch, num_graphs=inp.num_graphs,
            z=inp.z, edge_index=inp.edge_index, cell_offsets=inp.cell_offsets, radial=self.radial,
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
