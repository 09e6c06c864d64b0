"""One input's way through a prediction: canonical frame in, user frame and symmetry projection out.

:func:`prepare` finds the structure's spglib dataset once, puts the structure into its
:class:`~e3relax.predict.canonical.CanonicalFrame` (when ``canonical``) and keeps the input's
space-group operations (when ``symmetry``); the model sees the canonical structure.
:meth:`Prepared.to_user` maps each predicted layer back into the user's basis, atom order and
origin, then projects it onto the input's operations (:func:`~e3relax.predict.symmetry.project`;
the projection does not depend on the basis or the origin, so projecting in the user's frame is
projecting in the canonical one). :class:`~e3relax.predict.Relaxer` runs every prediction (``relax``,
``iter_relax`` and the evaluation's ``predict_batch``) through these two steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from e3relax.predict.canonical import CanonicalFrame
from e3relax.predict.symmetry import SymmetryOps, find_operations, project_layers, spglib_dataset

__all__ = ["FrameSettings", "Prepared", "prepare"]


@dataclass(frozen=True)
class FrameSettings:
    """How inputs are framed and projected.

    Attributes:
        symmetry: project every predicted layer onto the input's space-group operations.
        canonical: predict in the canonical frame (primitive cell, reduced basis, atom 0 at the
            origin) and map back. ``None`` (only before a caller resolves it): the frame the model
            was trained in.
        symprec: spglib tolerance (A) for the operations and the primitive cell.
    """

    symmetry: bool = True
    canonical: bool | None = True
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
        ops: space-group operations of the user's structure (identity only when projection is off).
        atoms: ``frame``'s structure as ``ase.Atoms`` (what the graph is built on).
        pos_u, cell_u: the user's structure ([N, 3], [3, 3]), the reference of the projection.
    """

    frame: CanonicalFrame
    ops: SymmetryOps
    atoms: Any
    pos_u: np.ndarray
    cell_u: np.ndarray

    def to_user(self, pos: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map one predicted layer (canonical frame) into the user's frame and project it.

        Shapes:
            pos: [M, 3], cell: [3, 3] -> ([N, 3], [3, 3]).
        """
        return self.layers_to_user([pos], [cell])[0]

    def layers_to_user(self, pos: list[np.ndarray], cell: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`to_user` of every predicted layer, projected in one call. Shapes: T x ([M, 3], [3, 3])."""
        user = [self.frame.to_user(p, c) for p, c in zip(pos, cell)]
        return project_layers(self.ops, self.pos_u, self.cell_u, [p for p, _ in user], [c for _, c in user])


def prepare(atoms: Any, settings: FrameSettings, name: str = "structure") -> Prepared:
    """Frame ``atoms`` (an ``ase.Atoms``) as ``settings`` say and find its operations."""
    from e3relax.structures import arrays_to_atoms

    pos, cell = atoms.get_positions(), np.asarray(atoms.cell.array, dtype=float)
    numbers, pbc = atoms.numbers, np.asarray(atoms.pbc, dtype=bool)
    periodic = bool(pbc.all()) and len(pos) > 0 and abs(np.linalg.det(cell)) > 1e-6
    ds = spglib_dataset(pos, cell, numbers, settings.symprec, name) if periodic and not settings.off else None
    if settings.canonical:
        frame = CanonicalFrame.from_structure(pos, cell, numbers, pbc, settings.symprec, primitive=ds is not None,
                                              dataset=ds)
    else:
        frame = CanonicalFrame.user(pos, cell, numbers, pbc)
    if settings.symmetry and ds is not None:
        ops = find_operations(pos, cell, numbers, settings.symprec, name, dataset=ds)
    else:
        ops = SymmetryOps.identity(len(pos))
    framed = atoms if frame.identity else arrays_to_atoms(frame.positions, frame.cell, frame.numbers, frame.pbc)
    return Prepared(frame, ops, framed, pos, cell)
