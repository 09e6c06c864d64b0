"""What the Relaxer returns besides plain numbers: the per-layer trajectory and the predicted
structure in the input's own type."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["RelaxTrajectory", "structure_like"]


@dataclass
class RelaxTrajectory:
    """Per-layer trajectory of one prediction (frame 0 = input, last = the prediction).

    Attributes mirror CHGNet's ``TrajectoryObserver`` where they exist: ``atom_positions``
    (list of [N, 3]), ``cells`` (list of [3, 3]), ``atomic_number`` ([N]); there are no energies or
    forces, the model predicts geometry only.
    """

    atom_positions: list[np.ndarray]
    cells: list[np.ndarray]
    atomic_number: np.ndarray
    pbc: np.ndarray = field(default_factory=lambda: np.ones(3, dtype=bool))

    def __len__(self) -> int:
        return len(self.atom_positions)

    def to_atoms(self) -> list:
        """The frames as ``ase.Atoms``."""
        from e3relax.structures import arrays_to_atoms

        return [arrays_to_atoms(p, c, self.atomic_number, self.pbc) for p, c in zip(self.atom_positions, self.cells)]


def structure_like(template: Any, pos: np.ndarray, cell: np.ndarray) -> Any:
    """A copy of ``template`` (Atoms or Structure) with new Cartesian positions and cell, same atom order."""
    from ase import Atoms

    if isinstance(template, Atoms):
        out = template.copy()
        out.set_cell(cell, scale_atoms=False)
        out.set_positions(pos)
        out.calc = None
        return out
    from pymatgen.core import Lattice, Structure

    if isinstance(template, Structure):
        return Structure(Lattice(cell, pbc=template.lattice.pbc), template.species, pos, coords_are_cartesian=True,
                         site_properties=template.site_properties, properties=dict(template.properties))
    raise TypeError(f"expected ase.Atoms or pymatgen Structure, got {type(template).__name__}")
