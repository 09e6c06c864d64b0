"""Iterative relaxation with the pretrained CHGNet potential and ASE FIRE (optional extra ``chgnet``).

Used as the reference method in the benchmarks (accuracy and time against one-shot prediction),
for the energy check of predictions, for the hybrid ``--refine chgnet`` polish of predictions, and by
the built-in dataset generator. CHGNet's weights ship inside its wheel, so nothing is downloaded.

For throughput on a CPU run one process per core with ``OMP_NUM_THREADS=1``: two threads in one
process are slower than one.
"""
from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from e3relax.structures import as_atoms

log = logging.getLogger(__name__)

#: cells with fewer atoms relax on one torch thread (more threads only wait on graphs this small)
SMALL_CELL_ATOMS = 200

__all__ = ["ChgnetRelaxResult", "load_chgnet", "fire_relax", "chgnet_relax", "chgnet_energy_per_atom",
           "cell_filter_mask"]


@dataclass
class ChgnetRelaxResult:
    """Outcome of one FIRE relaxation.

    Attributes:
        atoms: the relaxed ``ase.Atoms`` (same atom order as the input).
        steps: FIRE steps taken.
        converged: whether max force (and stress) fell below ``fmax`` within the step cap.
        seconds: wall time of the optimisation (model loading excluded).
        energy_per_atom: final CHGNet energy per atom (eV/atom).
        initial_energy_per_atom: CHGNet energy per atom of the input (eV/atom).
    """

    atoms: Any
    steps: int
    converged: bool
    seconds: float
    energy_per_atom: float
    initial_energy_per_atom: float


@lru_cache(maxsize=1)
def load_chgnet():
    """The pretrained CHGNet model bundled with the ``chgnet`` wheel (loaded once per process)."""
    try:
        from chgnet.model import CHGNet
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise ImportError("CHGNet tools need the optional extra: pip install -c constraints.txt 'e3relax[chgnet]'") from exc
    with _printed_to_log():
        return CHGNet.load(verbose=False)


@lru_cache(maxsize=4)
def _cached_calculator(model):
    from chgnet.model.dynamics import CHGNetCalculator

    with _printed_to_log():
        return CHGNetCalculator(model=model, use_device="cpu", on_isolated_atoms="ignore")


def _calculator(model=None):
    """One CHGNet calculator per model and process, so CHGNet announces its device once, not per structure."""
    return _cached_calculator(model or load_chgnet())


@contextlib.contextmanager
def _printed_to_log():
    """What CHGNet prints (version, device) goes to the log as one line."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        text = "; ".join(line.strip() for line in buf.getvalue().splitlines() if line.strip())
        if text:
            log.info("%s", text)


#: warnings FIRE with the cell filter raises on every step and that say nothing about the result
_NOISE = ("logm result may be inaccurate", "Converting a tensor with requires_grad=True to a scalar")
_noise_seen: set[str] = set()


@contextlib.contextmanager
def _one_line_per_notice():
    """Turn the repeated numerical notices of a relaxation into one log line each per process."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        text = str(w.message)
        notice = next((n for n in _NOISE if n in text), None)
        if notice is None:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        elif notice not in _noise_seen:
            _noise_seen.add(notice)
            log.info("%s: %s (repeats are not shown)", w.category.__name__, text.splitlines()[0])


def cell_filter_mask(pbc) -> list[int] | None:
    """Voigt mask (xx, yy, zz, yz, xz, xy) that keeps non-periodic directions of the cell fixed.

    Returns None (all components free) for a fully periodic structure. For a slab with
    ``pbc = (T, T, F)`` the mask is ``[1, 1, 0, 0, 0, 1]``: the vacuum vector is not deformed.
    """
    pbc = [bool(p) for p in pbc]
    if all(pbc):
        return None
    diag = [1 if p else 0 for p in pbc]
    off = [int(pbc[1] and pbc[2]), int(pbc[0] and pbc[2]), int(pbc[0] and pbc[1])]
    return diag + off


def fire_relax(
    structure,
    calculator,
    *,
    fmax: float = 0.05,
    max_steps: int = 500,
    relax_cell: bool = True,
) -> ChgnetRelaxResult:
    """Relax one structure with ASE FIRE and any ASE calculator (Frechet cell filter when ``relax_cell``).

    Args:
        structure: ``ase.Atoms`` or pymatgen ``Structure``.
        calculator: an ASE calculator (CHGNet's, EMT, ...).
        fmax: force threshold in eV/A (the stress criterion follows the filter's convention).
        max_steps: FIRE step cap.
        relax_cell: relax the cell too (non-periodic directions stay fixed).
    """
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    from e3relax.threads import single_thread_if

    atoms = as_atoms(structure).copy()
    atoms.calc = calculator
    with _one_line_per_notice(), single_thread_if(len(atoms) < SMALL_CELL_ATOMS):
        e0 = float(atoms.get_potential_energy()) / len(atoms)
        target = FrechetCellFilter(atoms, mask=cell_filter_mask(atoms.pbc)) if relax_cell else atoms
        opt = FIRE(target, logfile=None)
        t0 = time.perf_counter()
        converged = bool(opt.run(fmax=fmax, steps=max_steps))
        seconds = time.perf_counter() - t0
        energy = float(atoms.get_potential_energy()) / len(atoms)
    relaxed = atoms.copy()
    relaxed.calc = None
    relaxed.constraints = []
    return ChgnetRelaxResult(relaxed, int(opt.nsteps), converged, seconds, energy, e0)


def chgnet_relax(
    structure,
    *,
    fmax: float = 0.05,
    max_steps: int = 500,
    relax_cell: bool = True,
    model=None,
) -> ChgnetRelaxResult:
    """Relax one structure with CHGNet and FIRE (see :func:`fire_relax`).

    Args:
        model: a loaded CHGNet model; default the bundled pretrained one.
    """
    return fire_relax(structure, _calculator(model), fmax=fmax, max_steps=max_steps, relax_cell=relax_cell)


def chgnet_energy_per_atom(structures, model=None) -> np.ndarray:
    """CHGNet energy per atom (eV/atom) of each structure, single points without relaxation."""
    from e3relax.threads import single_thread_if

    calc = _calculator(model)
    out = []
    for s in structures:
        atoms = as_atoms(s).copy()
        atoms.calc = calc
        with _one_line_per_notice(), single_thread_if(len(atoms) < SMALL_CELL_ATOMS):
            out.append(float(atoms.get_potential_energy()) / len(atoms))
    return np.asarray(out)
