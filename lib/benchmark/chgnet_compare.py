"""Against iterative relaxation: CHGNet + ASE FIRE on the same test structures, and the energy check.

For each selected test structure (the first ``K`` of the test set):

- relax the unrelaxed input with pretrained CHGNet and FIRE under a Frechet cell filter to
  ``fmax`` (eV/A); score the result against the DFT label with the paper's metrics, and time it;
- energy check (paper Fig. 5): CHGNet energy per atom of the unrelaxed input, the reference
  relaxed structure and the E3Relax prediction; FIRE steps still needed from the E3Relax
  prediction, against the steps needed from the unrelaxed input.

The relaxations run in ``jobs`` processes of one thread each (:func:`relax_iter`), which on a CPU is
faster than one process with several threads; ``benchmarks/hybrid_chgnet.py`` uses the same workers.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from e3relax.metrics import structure_metrics

__all__ = ["score", "relax_iter", "relax_and_score", "energy_check", "energy_summary", "atoms_record", "record_atoms"]

log = logging.getLogger(__name__)
_MODEL: Any = None  # CHGNet, loaded once per worker process


def atoms_record(atoms: Any) -> dict:
    """A JSON-able record of an ``ase.Atoms`` (positions, cell, atomic numbers, pbc)."""
    return {"pos": atoms.get_positions().tolist(), "cell": np.asarray(atoms.get_cell()).tolist(),
            "z": atoms.numbers.tolist(), "pbc": [bool(p) for p in atoms.pbc]}


def record_atoms(d: dict) -> Any:
    """Inverse of :func:`atoms_record`."""
    from e3relax.structures import arrays_to_atoms

    return arrays_to_atoms(np.asarray(d["pos"]), np.asarray(d["cell"]), np.asarray(d["z"]), d.get("pbc", (True,) * 3))


def _one_thread() -> None:
    torch.set_num_threads(1)


def _relax_one(job: tuple[dict, float, int]) -> dict:
    """In a worker: CHGNet + FIRE (cell filter) of one structure record."""
    global _MODEL
    from e3relax.chgnet_tools import chgnet_relax, load_chgnet

    start, fmax, max_steps = job
    if _MODEL is None:
        _MODEL = load_chgnet()
    t0 = time.process_time()
    res = chgnet_relax(record_atoms(start), fmax=fmax, max_steps=max_steps, relax_cell=True, model=_MODEL)
    return {"steps": int(res.steps), "converged": bool(res.converged), "seconds": float(res.seconds),
            "cpu_s": time.process_time() - t0, "energy_per_atom": float(res.energy_per_atom),
            "final": atoms_record(res.atoms)}


def relax_iter(structures: Sequence[Any], fmax: float = 0.05, max_steps: int = 500, jobs: int = 1) -> Iterator[dict]:
    """CHGNet + FIRE of every structure, in order, in ``jobs`` one-thread processes (1: this process).

    Yields one record per structure as it finishes: ``steps``, ``converged``, ``seconds`` (wall) and
    ``cpu_s`` (CPU of the worker) of the optimisation, ``energy_per_atom`` and ``final`` (the relaxed
    structure, :func:`record_atoms` turns it back into ``ase.Atoms``).
    """
    import multiprocessing as mp

    todo = [(atoms_record(a), fmax, max_steps) for a in structures]
    if jobs <= 1 or len(todo) <= 1:
        yield from map(_relax_one, todo)
        return
    with mp.get_context("spawn").Pool(min(jobs, len(todo)), initializer=_one_thread) as pool:
        yield from pool.imap(_relax_one, todo)


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
                    max_steps: int = 500, jobs: int = 1) -> dict[str, Any]:
    """Relax every input with CHGNet + FIRE (cell filter, ``jobs`` processes) and score it against its reference.

    Returns:
        ``{"metrics": {name: [K]}, "steps": [K], "converged": [K], "seconds": [K], "cpu_s": [K],
        "energy_per_atom": [K], "structures": [K Atoms]}``.
    """
    results = []
    for i, res in enumerate(relax_iter(inputs, fmax, max_steps, jobs)):
        log.info("CHGNet+FIRE %d/%d: %d steps, %.1f s, converged=%s", i + 1, len(inputs), res["steps"],
                 res["seconds"], res["converged"])
        results.append(res)
    structures = [record_atoms(r["final"]) for r in results]
    return {"metrics": score(structures, references) if structures else {},
            **{k: np.array([r[k] for r in results]) for k in ("steps", "converged", "seconds", "cpu_s",
                                                               "energy_per_atom")},
            "structures": structures}


def energy_check(inputs: Sequence[Any], references: Sequence[Any], predictions: Sequence[Any],
                 steps_from_input: Sequence[int], converged_from_input: Sequence[bool], fmax: float = 0.05,
                 max_steps: int = 500, jobs: int = 1) -> dict[str, Any]:
    """CHGNet energies of input, reference and prediction; FIRE steps from the prediction.

    Args:
        inputs, references, predictions: ``ase.Atoms`` of the same structures.
        steps_from_input, converged_from_input: FIRE outcome from the inputs (:func:`relax_and_score`).

    Returns:
        per-structure arrays ``e_unrelaxed``, ``e_reference``, ``e_predicted`` (eV/atom),
        ``steps_from_unrelaxed``, ``steps_from_predicted``, ``converged_from_unrelaxed``,
        ``converged_from_predicted``, ``seconds_from_predicted`` (wall), ``cpu_s_from_predicted``, and the relaxed structures
        ``structures_from_predicted`` (the hybrid: prediction polished by CHGNet + FIRE).
    """
    from e3relax.chgnet_tools import chgnet_energy_per_atom, load_chgnet

    model = load_chgnet()
    out: dict[str, Any] = {
        "e_unrelaxed": chgnet_energy_per_atom(inputs, model),
        "e_reference": chgnet_energy_per_atom(references, model),
        "e_predicted": chgnet_energy_per_atom(predictions, model),
        "steps_from_unrelaxed": np.asarray(steps_from_input),
        "converged_from_unrelaxed": np.asarray(converged_from_input, dtype=bool),
    }
    results = []
    for i, res in enumerate(relax_iter(predictions, fmax, max_steps, jobs)):
        log.info("CHGNet+FIRE from the prediction %d/%d: %d steps, %.1f s", i + 1, len(predictions), res["steps"],
                 res["seconds"])
        results.append(res)
    out["steps_from_predicted"] = np.array([r["steps"] for r in results])
    out["converged_from_predicted"] = np.array([r["converged"] for r in results], dtype=bool)
    out["seconds_from_predicted"] = np.array([r["seconds"] for r in results])
    out["cpu_s_from_predicted"] = np.array([r["cpu_s"] for r in results])
    out["structures_from_predicted"] = [record_atoms(r["final"]) for r in results]
    return out


def energy_summary(e: dict[str, Any], n: int) -> dict[str, Any]:
    """Means and medians of :func:`energy_check` over its ``n`` structures, with the per-structure arrays."""
    return {"num_structures": n, "e_unrelaxed": float(np.mean(e["e_unrelaxed"])),
            "e_reference": float(np.mean(e["e_reference"])), "e_predicted": float(np.mean(e["e_predicted"])),
            "de_unrelaxed": float(np.mean(np.abs(e["e_unrelaxed"] - e["e_reference"]))),
            "de_predicted": float(np.mean(np.abs(e["e_predicted"] - e["e_reference"]))),
            "steps_from_unrelaxed_mean": float(np.mean(e["steps_from_unrelaxed"])),
            "steps_from_unrelaxed_median": float(np.median(e["steps_from_unrelaxed"])),
            "steps_from_predicted_mean": float(np.mean(e["steps_from_predicted"])),
            "steps_from_predicted_median": float(np.median(e["steps_from_predicted"])),
            "converged_from_unrelaxed": int(np.sum(e["converged_from_unrelaxed"])),
            "converged_from_predicted": int(np.sum(e["converged_from_predicted"])),
            "per_structure": {k: np.asarray(v).tolist() for k, v in e.items() if k != "structures_from_predicted"}}
