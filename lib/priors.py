"""Composition priors: a model starts from the input scaled to a fitted volume and learns the residual.

The analogue of MACE's E0s or TorchMD-Net's atomrefs for relaxation: one number per element fitted
on the training split by least squares, stored as a buffer of the prior module (so it travels in
the model's ``state_dict`` and checkpoints), applied before the model's first layer.

Configured as ``model: {name: e3relax, ..., prior: {name: atomic_volume}}``; the engine fits an
unfitted prior on ``data.train`` when training starts (:func:`fit_priors`) and logs the volumes.
The prior alone is the ``volume_prior`` model (:mod:`e3relax.models.volume_prior`).
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import torch
from torch import nn

from e3relax import keys
from e3relax.model_base import SymmetryLaws
from e3relax.nn.embedding import NUM_ELEMENTS
from e3relax.registry import PRIORS

__all__ = ["AtomicVolumePrior", "fit_atomic_volumes", "fit_priors", "structure_volumes"]

log = logging.getLogger(__name__)

#: why the prior breaks a host's Cartesian translation and input-cell wrap laws
SCALED_TRANSLATION = ("the prior scales the input about the origin by s = (V_prior / V_u)^(1/3): a Cartesian "
                      "translation t reaches the model as s t")


def fit_atomic_volumes(numbers: Iterable[np.ndarray], volumes: Iterable[float], nonnegative: bool = True,
                       num_elements: int = NUM_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
    """Per-element volumes ``v_Z`` with ``V_cell ~ sum_i v_{Z_i}`` by (non-negative) least squares.

    Args:
        numbers: atomic numbers of each structure.
        volumes: the (relaxed) cell volume of each structure, A^3.
        nonnegative: ``scipy.optimize.nnls`` (else ``numpy.linalg.lstsq``).
        num_elements: largest atomic number.

    Returns:
        ``(v [num_elements + 1], seen [num_elements + 1] bool)``; elements never seen get the
        atom-weighted mean volume per atom of the fit, so no structure gets a zero volume.
    """
    counts, target = [], []
    for z, vol in zip(numbers, volumes):
        counts.append(np.bincount(np.asarray(z, dtype=np.int64), minlength=num_elements + 1))
        target.append(float(vol))
    if not counts:
        raise ValueError("atomic volume prior: no structures to fit on")
    a, b = np.stack(counts).astype(np.float64), np.asarray(target)
    seen = a.sum(0) > 0
    cols = np.flatnonzero(seen)
    if nonnegative:
        from scipy.optimize import nnls

        sol, _ = nnls(a[:, cols], b)
    else:
        sol = np.linalg.lstsq(a[:, cols], b, rcond=None)[0]
    v = np.zeros(num_elements + 1)
    v[cols] = sol
    v[~seen] = b.sum() / a.sum()
    return v, seen


def structure_volumes(dataset: Any) -> tuple[list[np.ndarray], list[float]]:
    """Atomic numbers and relaxed-cell volumes of every record of a labelled dataset."""
    numbers, volumes = [], []
    for k in range(len(dataset)):
        d = dataset[k]
        numbers.append(d[keys.Z].numpy())
        volumes.append(abs(float(torch.linalg.det(d[keys.CELL_R].reshape(3, 3).double()))))
    return numbers, volumes


@PRIORS.register("atomic_volume")
class AtomicVolumePrior(nn.Module):
    """Isotropic scaling of the input to the sum of fitted per-element volumes, fractional coordinates kept.

    ``V_p = sum_i v_{Z_i}``, ``s = (V_p / |det L_u|)^(1/3)``, ``(r, L) -> (s r, s L)``. Unfitted (or
    ``V_p <= 0``) it is the identity. Invariant inputs (Z, volume), so rotation, reflection and
    permutation laws of the host are kept; a host whose atoms ride its cell (fractional translation,
    wrap by the predicted cell: E3Relax) keeps those laws exactly; a host with Cartesian translation
    loses it (:data:`SCALED_TRANSLATION`), which :meth:`attach_to` declares.

    Args:
        volumes: optional ``{Z: v_Z}`` (A^3) to start fitted (tests, fixed priors).
        nonnegative: non-negative least squares in :meth:`fit`.

    Shapes:
        pos: [N, 3], cell: [B, 3, 3], z: [N], batch: [N] -> pos: [N, 3], cell: [B, 3, 3]
    """

    symmetry_options = {"host_rides_cell": {
        True: SymmetryLaws(translation="fractional", wrap="predicted_cell"),
        False: SymmetryLaws(translation="none", wrap="none",
                            broken={"translation": SCALED_TRANSLATION, "wrap": SCALED_TRANSLATION}),
    }}

    def __init__(self, volumes: Optional[Mapping[int, float]] = None, nonnegative: bool = True) -> None:
        super().__init__()
        self.nonnegative = bool(nonnegative)
        self.host_rides_cell: Optional[bool] = None
        self.register_buffer("volumes", torch.zeros(NUM_ELEMENTS + 1, dtype=torch.float64))
        self.register_buffer("fitted", torch.tensor(False))
        if volumes:
            v = torch.zeros(NUM_ELEMENTS + 1, dtype=torch.float64)
            for z, vol in volumes.items():
                v[int(z)] = float(vol)
            self.set_volumes(v)

    def attach_to(self, host_laws: SymmetryLaws) -> None:
        """Record whether the host's atoms ride its cell (its laws without the prior)."""
        self.host_rides_cell = host_laws.translation == "fractional" and host_laws.wrap == "predicted_cell"

    def set_volumes(self, volumes: torch.Tensor) -> None:
        self.volumes.copy_(volumes.to(self.volumes))
        self.fitted.fill_(True)

    def fit(self, numbers: Iterable[np.ndarray], volumes: Iterable[float]) -> np.ndarray:
        """Fit on (atomic numbers, relaxed volume) pairs; returns the per-element volumes."""
        numbers, volumes = list(numbers), list(volumes)
        v, seen = fit_atomic_volumes(numbers, volumes, self.nonnegative, NUM_ELEMENTS)
        self.set_volumes(torch.as_tensor(v))
        log.info("atomic volume prior fitted on %d structures (A^3 per atom): %s", len(numbers),
                 ", ".join(f"Z={z} {v[z]:.2f}" for z in np.flatnonzero(seen)))
        return v

    def fit_dataset(self, dataset: Any) -> np.ndarray:
        """Fit on every record of a labelled dataset (``z`` and the relaxed cell)."""
        return self.fit(*structure_volumes(dataset))

    def target_volume(self, z: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
        """``V_p`` per structure. Shapes: z [N], batch [N] -> [B]."""
        per_atom = self.volumes[z]
        return per_atom.new_zeros(num_graphs).index_add_(0, batch, per_atom)

    def forward(self, pos: torch.Tensor, cell: torch.Tensor, z: torch.Tensor, batch: torch.Tensor,
                num_graphs: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not bool(self.fitted):
            return pos, cell
        target = self.target_volume(z, batch, num_graphs).to(cell.dtype)
        volume = torch.linalg.det(cell).abs()
        s = torch.where(target > 0, (target / volume).pow(1.0 / 3.0), torch.ones_like(volume))
        return pos * s[batch, None], cell * s[:, None, None]


def fit_records(dataset: Any) -> Any:
    """The part of a training set a prior is fitted on: without its trajectory-frame datasets
    (LMDB split ``train_frames``), whose frames repeat their parent's relaxed volume."""
    from torch.utils.data import ConcatDataset

    from e3relax.datasets.splits import FRAMES_SPLIT

    parts = getattr(dataset, "datasets", None)
    if not parts:
        return dataset
    kept = [d for d in parts if (getattr(d, "metadata", None) or {}).get("split") != FRAMES_SPLIT]
    if not kept or len(kept) == len(parts):
        return dataset
    return kept[0] if len(kept) == 1 else ConcatDataset(kept)


def fit_priors(model: nn.Module, dataset: Any, refit: bool = False) -> None:
    """Fit every unfitted prior of ``model`` (or of a wrapped ``model.module``) on ``dataset``
    (its pairs, not its trajectory frames: :func:`fit_records`); ``refit``: fitted ones too (a
    fine-tuning run fits its prior on its own training split, as MACE refits its E0s)."""
    model = getattr(model, "module", model)
    prior = getattr(model, "prior", None)
    if prior is None or (bool(getattr(prior, "fitted", True)) and not (refit and hasattr(prior, "fit_dataset"))):
        return
    dataset = fit_records(dataset)
    log.info("fitting the %s prior on the training split (%d structures)",
             getattr(prior, "registry_name", type(prior).__name__), len(dataset))
    prior.fit_dataset(dataset)
