"""Against iterative relaxation: CHGNet + ASE FIRE on the same test structures, and the energy check.

For each selected test structure (the first ``K`` of the test set):

- relax the unrelaxed input with pretrained CHGNet and FIRE under a Frechet cell filter to
  ``fmax`` (eV/A); score the result against the DFT label with the paper's metrics, and time it;
- energy check (paper Fig. 5): CHGNet energy per atom of the unrelaxed input, the reference
  relaxed structure and the E3Relax prediction; FIRE steps still needed from the E3Relax
  prediction, against the steps needed from the unrelaxed input.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from e3relax.metrics import structure_metrics

__all__ = ["score", "relax_and_score", "energy_check"]

log = logging.getLogger(__name__)


def _arrays(atoms_list: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pos = torch.cat([torch.as_tensor(a.get_positions(), dtype=torch.float64) for a in atoms_list])
    cell = torch.stack([torch.as_tensor(np.asarray(a.get_cell()), dtype=torch.float64) for a in atoms_list])
    batch = torch.cat([torch.full((len(a),), i, dtype=torch.long) for i, a in enumerate(atoms_list)])
    return pos, cell, batch


def score(pred: Sequence[Any], ref: Sequence[Any]) -> dict[str, np.ndarray]:
    """Per-structure paper metrics of predicted against reference ``ase.Atoms`` (same atom order)."""
    p_pos, p_cell, batch = _arrays(pred)
    r_pos, r_cell, _ = _arrays(ref)
    return {k: v.numpy() for k, v in structure_metrics(p_pos, p_cell, r_pos, r_cell, batch).items()}


def relax_and_score(inputs: Sequence[Any], references: Sequence[Any], fmax: float = 0.05,
                    max_steps: int = 500) -> dict[str, Any]:
    """Relax every input with CHGNet + FIRE (cell filter) and score it against its reference.

    Returns:
        ``{"metrics": {name: [K]}, "steps": [K], "converged": [K], "seconds": [K],
        "energy_per_atom": [K], "structures": [K Atoms]}``.
    """
    from e3relax.chgnet_tools import chgnet_relax, load_chgnet

    model = load_chgnet()
    results = []
    for i, atoms in enumerate(inputs):
        res = chgnet_relax(atoms, fmax=fmax, max_steps=max_steps, relax_cell=True, model=model)
        log.info("CHGNet+FIRE %d/%d: %d steps, %.1f s, converged=%s", i + 1, len(inputs), res.steps,
                 res.seconds, res.converged)
        results.append(res)
    structures = [r.atoms for r in results]
    return {"metrics": score(structures, references) if structures else {},
            "steps": np.array([r.steps for r in results]), "converged": np.array([r.converged for r in results]),
            "seconds": np.array([r.seconds for r in results]),
            "energy_per_atom": np.array([r.energy_per_atom for r in results]), "structures": structures}


def energy_check(inputs: Sequence[Any], references: Sequence[Any], predictions: Sequence[Any],
                 steps_from_input: Sequence[int], converged_from_input: Sequence[bool], fmax: float = 0.05,
                 max_steps: int = 500) -> dict[str, Any]:
    """CHGNet energies of input, reference and prediction; FIRE steps from the prediction.

    Args:
        inputs, references, predictions: ``ase.Atoms`` of the same structures.
        steps_from_input, converged_from_input: FIRE outcome from the inputs (:func:`relax_and_score`).

    Returns:
        per-structure arrays ``e_unrelaxed``, ``e_reference``, ``e_predicted`` (eV/atom),
        ``steps_from_unrelaxed``, ``steps_from_predicted``, ``converged_from_unrelaxed``,
        ``converged_from_predicted``, ``seconds_from_predicted``, and the relaxed structures
        ``structures_from_predicted`` (the hybrid: prediction polished by CHGNet + FIRE).
    """
    from e3relax.chgnet_tools import chgnet_energy_per_atom, chgnet_relax, load_chgnet

    model = load_chgnet()
    out: dict[str, Any] = {
        "e_unrelaxed": chgnet_energy_per_atom(inputs, model),
        "e_reference": chgnet_energy_per_atom(references, model),
        "e_predicted": chgnet_energy_per_atom(predictions, model),
        "steps_from_unrelaxed": np.asarray(steps_from_input),
        "converged_from_unrelaxed": np.asarray(converged_from_input, dtype=bool),
    }
    results = []
    for i, atoms in enumerate(predictions):
        res = chgnet_relax(atoms, fmax=fmax, max_steps=max_steps, relax_cell=True, model=model)
        log.info("CHGNet+FIRE from the prediction %d/%d: %d steps, %.1f s", i + 1, len(predictions), res.steps,
                 res.seconds)
        results.append(res)
    out["steps_from_predicted"] = np.array([r.steps for r in results])
    out["converged_from_predicted"] = np.array([r.converged for r in results], dtype=bool)
    out["seconds_from_predicted"] = np.array([r.seconds for r in results])
    out["structures_from_predicted"] = [r.atoms for r in results]
    return out
