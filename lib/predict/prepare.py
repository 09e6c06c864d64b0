"""One input's way through a prediction: canonical frame and symmetry operations in, user frame out.

:func:`prepare` puts a structure into its :class:`~e3relax.predict.canonical.CanonicalFrame` (when
``canonical``) and finds that frame's space-group operations (when ``symmetry``); the model sees
the canonical structure. :meth:`Prepared.to_user` projects each predicted layer onto those
operations (:func:`~e3relax.predict.symmetry.project`) and maps it back into the user's basis,
atom order and origin. :class:`~e3relax.predict.Relaxer` runs every prediction (``relax``,
``iter_relax`` and the evaluation's ``predict_batch``) through these two steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from e3relax.predict.canonical import CanonicalFrame
from e3relax.predict.symmetry import SymmetryOps, find_operations, project

__all__ = ["FrameSettings", "Prepared", "prepare"]


@dataclass(frozen=True)
class FrameSettings:
    """How inputs are framed and projected.

    Attributes:
        symmetry: project every predicted layer onto the input's space-group operations.
        canonical: predict in the canonical frame (primitive cell, reduced basis, atom 0 at the
            origin) and map back.
        symprec: spglib tolerance (A) for the operations and the primitive cell.
    """

    symmetry: bool = True
    canonical: bool = True
    symprec: float = 0.01

    @property
    def off(self) -> bool:
        """Neither framing nor projection: the model sees the user's structure as it is."""
        return not (self.symmetry or self.canonical)


@dataclass
class Prepared:
    """An input in the frame the model sees.

    Attributes:
        frame: the canonical (or the user's own) frame.
        ops: space-group operations of ``frame``'s structure (identity only when projection is off).
        atoms: ``frame``'s structure as ``ase.Atoms`` (what the graph is built on).
    """

    frame: CanonicalFrame
    ops: SymmetryOps
    atoms: Any

    def to_user(self, pos: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project one predicted layer (canonical frame) and map it into the user's frame.

        Shapes:
            pos: [M, 3], cell: [3, 3] -> ([N, 3], [3, 3]).
        """
        pos, cell = project(self.ops, self.frame.positions, self.frame.cell, pos, cell)
        return self.frame.to_user(pos, cell)


def prepare(atoms: Any, settings: FrameSettings, name: str = "structure") -> Prepared:
    """Frame ``atoms`` (an ``ase.Atoms``) as ``settings`` say and find its operations."""
    from e3relax.structures import arrays_to_atoms

    pos, cell = atoms.get_positions(), np.asarray(atoms.cell.array, dtype=float)
    numbers, pbc = atoms.numbers, np.asarray(atoms.pbc, dtype=bool)
    if settings.canonical:
        frame = CanonicalFrame.from_structure(pos, cell, numbers, pbc, settings.symprec)
    else:
        frame = CanonicalFrame.user(pos, cell, numbers, pbc)
    periodic = frame.pbc.all() and len(frame.positions) and abs(np.linalg.det(frame.cell)) > 1e-6
    if settings.symmetry and periodic:
        ops = find_operations(frame.positions, frame.cell, frame.numbers, settings.symprec, name)
    else:
        ops = SymmetryOps.identity(len(frame.positions))
    framed = atoms if frame.identity else arrays_to_atoms(frame.positions, frame.cell, frame.numbers, frame.pbc)
    return Prepared(frame, ops, framed)
