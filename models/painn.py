"""PaiNN adapted to one-shot crystal relaxation (baseline of the E3Relax paper, App. C)."""
from __future__ import annotations

from typing import Any

from e3relax.model_base import RelaxModel
from e3relax.registry import BLOCKS, HEADS, MODELS
from e3relax.types import RelaxOutput

__all__ = ["PaiNN"]


@MODELS.register("painn")
class PaiNN(RelaxModel):
    """PaiNN (Schuett, Unke, Gastegger, "Equivariant message passing for the prediction of tensorial
    properties and molecular spectra", ICML 2021), in the OCP lineage used by the paper's baselines.

    Kept: atom embedding, ``num_layers`` x (equivariant message, original PaiNN update), the force
    head repurposed as a displacement head (two gated-equivariant blocks F -> F/2 -> 1, shared head
    ``gated_displacement``), ``r_hat = r_u + Delta r``. The cell comes from the shared DeepRelax lattice
    head (``lattice_head="equivariant_lattice"`` for an equivariant option). Edge vectors include
    the periodic offset ``r_j + k L_u - r_i``.

    Differences from the original and why: the message is the registered ``scalar_vector_message``
    (the OCP/E3Relax form: filter MLP F -> F/2 -> 3F, Gaussian basis with polynomial envelope, no
    LayerNorm before the filter), so PaiNN, DeepRelax and E3Relax share one message block; the
    displacement is one-shot (one output layer). Sized by the constructor only (OCP default:
    F 512, 6 layers, 128 RBF, cutoff 12; CPU config F 64, 3 layers).

    Symmetry: positions exactly E(3)-, permutation-, translation- and wrap-equivariant (input cell);
    the DeepRelax lattice head breaks rotation and reflection of the cell (composed from the heads'
    declarations).
    """

    measured_errors = {"rotation": "15 A (cell)", "reflection": "12 A (cell)"}

    def __init__(self, hidden_channels: int = 512, num_layers: int = 6, num_rbf: int = 128,
                 cutoff: float = 12.0, radial: Any = None, message: Any = "scalar_vector_message",
                 update: Any = "painn_update", displacement_head: Any = "gated_displacement",
                 lattice_head: Any = "deeprelax_lattice") -> None:
        super().__init__()
        self.embed = BLOCKS.build("atom_embedding", hidden_channels=hidden_channels)
        self.radial = BLOCKS.build(radial or {"name": "gaussian_rbf", "cutoff": cutoff}, num_rbf=num_rbf)
        self.stack = BLOCKS.build({"name": "painn_stack", "hidden_channels": hidden_channels, "num_layers": num_layers,
                                   "edge_channels": num_rbf, "message": message, "update": update})
        self.displacement = HEADS.build(displacement_head, hidden_channels=hidden_channels)
        self.lattice = HEADS.build(lattice_head, hidden_channels=hidden_channels)

    @classmethod
    def test_config(cls) -> dict:
        return {"hidden_channels": 8, "num_layers": 2, "num_rbf": 8, "cutoff": 8.0}

    def forward(self, data) -> RelaxOutput:
        inp = self.inputs(data)
        s, v = self.embed(inp.z)
        s, v = s.to(inp.pos.dtype), v.to(inp.pos.dtype)
        s, v = self.stack(s, v, self.radial(inp.dist), inp.unit, inp.edge_index)
        delta = self.displacement(s, v)
        cell_hat = self.lattice(s, inp.cell, inp.batch, inp.num_graphs)
        return RelaxOutput(pos=[inp.pos + delta], cell=[cell_hat], extras={})
