"""Base class of every registered model, and the symmetry laws a model declares."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from e3relax.types import RelaxOutput


@dataclass(frozen=True)
class SymmetryLaws:
    """The exact symmetry laws a model promises; the shared equivariance test checks each one.

    Attributes:
        rotation: output positions and cells rotate with the input (det +1).
        reflection: the same for improper rotations (det -1).
        permutation: permuting atoms permutes the output positions, cells unchanged.
        translation: ``"cartesian"``: r + t -> r_hat + t;  ``"fractional"``: r + t -> r_hat + t L_u^-1 L_hat
            (atoms ride the predicted cell); ``"none"``: no promise.
        wrap: moving atom a by n L_u: ``"input_cell"`` -> r_hat_a + n L_u; ``"predicted_cell"`` ->
            r_hat_a + n L_hat; ``"none"``: no promise.
        broken: property -> measured error / reason, for properties the design breaks
            (the test marks exactly these as expected failures).
    """

    rotation: bool = True
    reflection: bool = True
    permutation: bool = True
    translation: Literal["cartesian", "fractional", "none"] = "cartesian"
    wrap: Literal["input_cell", "predicted_cell", "none"] = "input_cell"
    broken: dict[str, str] = field(default_factory=dict)


class RelaxModel(torch.nn.Module):
    """A model mapping a batch of unrelaxed structures to per-layer relaxed positions and cells.

    Subclasses implement ``forward(data) -> RelaxOutput`` where ``data`` is a torch-geometric
    ``Batch`` with the fields of :mod:`e3relax.keys`, and set :attr:`symmetry`.
    """

    symmetry: ClassVar[SymmetryLaws] = SymmetryLaws()

    @classmethod
    def test_config(cls) -> dict:
        """Small constructor keywords used by the shared tests and smoke runs (override per model)."""
        return {}

    def laws(self) -> SymmetryLaws:
        """Symmetry laws of this instance (a model whose laws depend on its settings overrides this)."""
        return self.symmetry

    def forward(self, data) -> RelaxOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
