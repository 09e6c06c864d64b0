"""PaiNN adapted to one-shot crystal relaxation (baseline of the E3Relax paper, App. C)."""
from __future__ import annotations

from typing import Any

import torch

from e3relax import keys
from e3relax.geometry import edge_vectors
from e3relax.model_base import RelaxModel, SymmetryLaws
from e3relax.nn.painn import PaiNNStack
from e3relax.registry import BLOCKS, HEADS, MODELS
from e3relax.types import RelaxOutput

__all__ = ["PaiNN", "baseline_laws"]

_CELL_BREAKS = ("DeepRelax lattice head reads Cartesian cell numbers: the cell does not rotate/reflect "
                "with the input (measured max |cell err| ~1e-1..1e1 at test sizes); positions exact (~1e-14)")


def baseline_laws(lattice_head: Any) -> SymmetryLaws:
    """Laws of a model with E(3)-equivariant positions and the given lattice head spec."""
    name = lattice_head if isinstance(lattice_head, str) else dict(lattice_head).get("name")
    if name == "equivariant_lattice":
        return SymmetryLaws()
    return SymmetryLaws(broken={"rotation": _CELL_BREAKS, "reflection": _CELL_BREAKS})


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
    the DeepRelax lattice head breaks rotation and reflection of the cell.
    """

    def __init__(self, hidden_channels: int = 512, num_layers: int = 6, num_rbf: int = 128,
                 cutoff: float = 12.0, radial: Any = None, message: Any = "scalar_vector_message",
                 update: Any = "painn_update", displacement_head: Any = "gated_displacement",
                 lattice_head: Any = "deeprelax_lattice") -> None:
        super().__init__()
        self.lattice_head_spec = lattice_head
        self.embed = BLOCKS.build("atom_embedding", hidden_channels=hidden_channels)
        self.radial = BLOCKS.build(radial or {"name": "gaussian_rbf", "cutoff": cutoff}, num_rbf=num_rbf)
        self.stack = PaiNNStack(hidden_channels, num_layers, num_rbf, message, update)
        self.displacement = HEADS.build(displacement_head, hidden_channels=hidden_channels)
        self.lattice = HEADS.build(lattice_head, hidden_channels=hidden_channels)

    @classmethod
    def test_config(cls) -> dict:
        return {"hidden_channels": 8, "num_layers": 2, "num_rbf": 8, "cutoff": 8.0}

    def laws(self) -> SymmetryLaws:
        return baseline_laws(self.lattice_head_spec)

    def forward(self, data) -> RelaxOutput:
        pos, cell, z = data[keys.POS_U], data[keys.CELL_U], data[keys.Z]
        batch = getattr(data, keys.BATCH, None)
        batch = torch.zeros_like(z) if batch is None else batch
        edge_index = data[keys.EDGE_INDEX]
        vec, dist = edge_vectors(pos, cell, edge_index, data[keys.CELL_OFFSETS], batch)
        s, v = self.embed(z)
        s, v = s.to(pos.dtype), v.to(pos.dtype)
        s, v = self.stack(s, v, self.radial(dist), -vec / dist[:, None], edge_index)
        delta = self.displacement(s, v)
        cell_hat = self.lattice(s, cell, batch, cell.shape[0])
        return RelaxOutput(pos=[pos + delta], cell=[cell_hat], extras={})


