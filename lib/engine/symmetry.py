"""The input's space group inside training: every emitted layer projected before the loss.

With ``symmetry.train: true`` a run projects each layer a model emits onto the space-group
operations of its input (spglib at ``symmetry.symprec``), by the same differentiable projection
that prediction applies (:func:`e3relax.predict.symmetry.project_batch`), so the loss, and the
validation that picks the best checkpoint, see what ``predict`` returns. The operations of a
structure are found once and kept, keyed by its atoms, positions and cell (an augmented or
trajectory-frame input is a new key); structures with only the identity are not touched.
"""
from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from e3relax import keys
from e3relax.predict.symmetry import DEFAULT_SYMPREC, BatchOps, SymmetryOps, check_symprec, find_operations, project_batch
from e3relax.types import RelaxOutput

__all__ = ["TrainingSymmetry"]

log = logging.getLogger(__name__)


class TrainingSymmetry:
    """Projection of a model's output onto its batch's input symmetry (differentiable).

    Args:
        symprec: spglib tolerance (A).
        cache_size: structures whose operations are kept (least recently used go first).

    Shapes:
        ``__call__(out, batch)``: RelaxOutput(pos T x [N, 3], cell T x [B, 3, 3]) -> the same, projected.
    """

    def __init__(self, symprec: float = DEFAULT_SYMPREC, cache_size: int = 100_000) -> None:
        self.symprec = check_symprec(symprec, "symmetry.symprec")
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[bytes, SymmetryOps] = OrderedDict()
        self.found = 0  # structures analysed (cache misses)

    @classmethod
    def from_config(cls, symmetry: dict) -> "TrainingSymmetry | None":
        """The projection a run's ``symmetry`` config asks for (None with ``train: false``)."""
        return cls(symmetry["symprec"]) if symmetry["train"] else None

    def _ops(self, pos: np.ndarray, cell: np.ndarray, numbers: np.ndarray, name: str) -> SymmetryOps:
        key = hashlib.blake2b(b"".join(np.ascontiguousarray(a).tobytes() for a in (numbers, pos, cell)),
                              digest_size=16).digest()
        ops = self._cache.get(key)
        if ops is None:
            ops = find_operations(pos, cell, numbers, self.symprec, name)
            self.found += 1
            self._cache[key] = ops
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return ops

    def operations(self, batch: Any) -> BatchOps:
        """The :class:`BatchOps` of a batch's inputs (``pos_u``, ``cell_u``, ``z``)."""
        pos = batch[keys.POS_U].detach().to("cpu", torch.float64).numpy()
        cell = batch[keys.CELL_U].detach().reshape(-1, 3, 3).to("cpu", torch.float64).numpy()
        z = batch[keys.Z].detach().cpu().numpy()
        ptr = batch.ptr.cpu().numpy()
        ids = batch[keys.ID] if keys.ID in batch else [str(b) for b in range(len(cell))]
        ops = [self._ops(pos[a:b], cell[i], z[a:b], str(ids[i])) for i, (a, b) in enumerate(zip(ptr[:-1], ptr[1:]))]
        return BatchOps.from_ops(ops, device=batch[keys.POS_U].device)

    def __call__(self, out: RelaxOutput, batch: Any) -> RelaxOutput:
        ops = self.operations(batch)
        if bool(ops.trivial.all()):
            return out
        pos_u, cell_u = batch[keys.POS_U], batch[keys.CELL_U].reshape(-1, 3, 3)
        layers = [project_batch(ops, pos_u, cell_u, p, c.reshape(-1, 3, 3), batch.batch)
                  for p, c in zip(out.pos, out.cell)]
        return RelaxOutput(pos=[p for p, _ in layers], cell=[c for _, c in layers], extras=out.extras)
