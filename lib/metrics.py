"""Relaxation metrics: the paper's three, lattice-parameter errors, StructureMatcher and spglib.

Paper metrics (per structure; cells hold lattice vectors as rows):
    ``mae_pos``   = mean over the N x 3 components of |r_hat - r| (A). Frame-dependent: no
                    alignment, no translation removal, no re-wrapping of the prediction.
    ``shape_dev`` = ||L_hat L_hat^T - L L^T||_F (A^2, the Gram-matrix difference; the paper's
                    "A" is really A^2).
    ``mae_vol``   = |det L_hat - det L| with signed determinants (A^3).
The paper reports means over structures (:func:`summarize`); model selection uses the coordinate
MAE pooled over all atoms x 3 components of the validation set (:func:`pooled_coord_mae`, or
``MetricAccumulator.compute()[POOLED_MAE_POS]``). The Dummy baseline is the input itself
(:func:`dummy_metrics`).
"""
from __future__ import annotations

import logging
import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch_geometric.utils import scatter

from e3relax import keys

__all__ = [
    "MAE_POS", "MAE_POS_MASKED", "SHAPE_DEV", "MAE_VOL", "LENGTH_ERR", "ANGLE_ERR", "POOLED_MAE_POS",
    "PAPER_METRICS", "MatcherSettings", "STRICT", "LOOSE",
    "lattice_parameters", "structure_metrics", "pooled_coord_mae", "dummy_metrics", "batch_metrics",
    "match_metrics", "space_group_number", "summarize", "MetricAccumulator", "structures_from_batch",
    "MATCH_TIME_LIMIT", "MIN_CELL_FLATNESS", "MIN_VOLUME_PER_ATOM", "MatchTimeout", "degenerate_cell",
]

log = logging.getLogger(__name__)

MAE_POS = "mae_pos"                 #: per-structure coordinate MAE (A)
MAE_POS_MASKED = "mae_pos_masked"   #: coordinate MAE over masked atoms only (e.g. OC22 tags != 0)
SHAPE_DEV = "shape_dev"             #: ||G_hat - G||_F (A^2)
MAE_VOL = "mae_vol"                 #: |det L_hat - det L| (A^3)
LENGTH_ERR = ("a_err", "b_err", "c_err")                    #: |a_hat - a| ... (A)
ANGLE_ERR = ("alpha_err", "beta_err", "gamma_err")          #: |alpha_hat - alpha| ... (degrees)
LENGTH_MAE = "abc_mae"              #: mean of the three length errors (A)
ANGLE_MAE = "angle_mae"             #: mean of the three angle errors (degrees)
POOLED_MAE_POS = "pooled_mae_pos"   #: coordinate MAE pooled over all atoms x 3 (validation MAE)
PAPER_METRICS = (MAE_POS, SHAPE_DEV, MAE_VOL)


def lattice_parameters(cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lattice lengths (a, b, c) and angles (alpha, beta, gamma) in degrees.

    alpha is the angle between b and c, beta between a and c, gamma between a and b.

    Shapes: cell [B, 3, 3] -> lengths [B, 3], angles [B, 3].
    """
    a, b, c = cell[:, 0], cell[:, 1], cell[:, 2]
    lengths = torch.linalg.vector_norm(cell, dim=-1)

    def ang(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # atan2 is accurate near 0 and 180
        return torch.rad2deg(torch.atan2(torch.linalg.vector_norm(torch.cross(u, v, dim=-1), dim=-1),
                                         (u * v).sum(-1)))

    return lengths, torch.stack([ang(b, c), ang(a, c), ang(a, b)], dim=-1)


def structure_metrics(
    pred_pos: torch.Tensor,
    pred_cell: torch.Tensor,
    ref_pos: torch.Tensor,
    ref_cell: torch.Tensor,
    batch: torch.Tensor,
    atom_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-structure metrics of a batch: the paper's three plus lattice-parameter errors.

    Args:
        pred_pos, ref_pos: [N, 3] predicted / reference (unwrapped) positions.
        pred_cell, ref_cell: [B, 3, 3] cells, rows = lattice vectors.
        batch: [N] structure index of each atom.
        atom_mask: optional [N] bool; adds ``MAE_POS_MASKED`` over the selected atoms (NaN for a
            structure with none selected).

    Returns:
        ``{MAE_POS, SHAPE_DEV, MAE_VOL, a_err, b_err, c_err, alpha_err, beta_err, gamma_err,
        LENGTH_MAE, ANGLE_MAE[, MAE_POS_MASKED]}``, each a detached [B] tensor.
    """
    with torch.no_grad():
        nb = pred_cell.shape[0]
        err = (pred_pos - ref_pos).abs().mean(dim=-1)  # [N], mean over xyz
        out = {MAE_POS: scatter(err, batch, dim=0, dim_size=nb, reduce="mean")}
        if atom_mask is not None:
            m = atom_mask.to(err.dtype)
            num = scatter(err * m, batch, dim=0, dim_size=nb, reduce="sum")
            den = scatter(m, batch, dim=0, dim_size=nb, reduce="sum")
            out[MAE_POS_MASKED] = num / den  # 0/0 -> NaN for no selected atom
        gram_p = pred_cell @ pred_cell.transpose(-1, -2)
        gram_r = ref_cell @ ref_cell.transpose(-1, -2)
        out[SHAPE_DEV] = torch.linalg.matrix_norm(gram_p - gram_r)  # Frobenius
        out[MAE_VOL] = (torch.linalg.det(pred_cell) - torch.linalg.det(ref_cell)).abs()
        len_p, ang_p = lattice_parameters(pred_cell)
        len_r, ang_r = lattice_parameters(ref_cell)
        dl, da = (len_p - len_r).abs(), (ang_p - ang_r).abs()
        for i in range(3):
            out[LENGTH_ERR[i]] = dl[:, i]
            out[ANGLE_ERR[i]] = da[:, i]
        out[LENGTH_MAE] = dl.mean(-1)
        out[ANGLE_MAE] = da.mean(-1)
    return out


def pooled_coord_mae(pred_pos: torch.Tensor, ref_pos: torch.Tensor, atom_mask: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """Coordinate MAE pooled over all atoms x 3 components (the validation MAE). Shapes: [N, 3] -> []."""
    err = (pred_pos - ref_pos).abs().detach()
    if atom_mask is not None:
        err = err[atom_mask]
    return err.mean()


def batch_metrics(pred_pos: torch.Tensor, pred_cell: torch.Tensor, data: Any,
                  atom_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """:func:`structure_metrics` of a prediction against the labels of a PyG batch (POS_R, CELL_R)."""
    return structure_metrics(pred_pos, pred_cell, data[keys.POS_R], data[keys.CELL_R], data[keys.BATCH],
                             atom_mask=atom_mask)


def dummy_metrics(data: Any, atom_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Dummy baseline: the metrics of the input (POS_U, CELL_U) against the labels of a batch."""
    return batch_metrics(data[keys.POS_U], data[keys.CELL_U], data, atom_mask=atom_mask)


def summarize(per_structure: Mapping[str, Any]) -> dict[str, float]:
    """Mean over structures of each metric (NaN entries ignored; NaN if all are NaN).

    ``per_structure`` maps a metric name to a tensor, array or list of per-structure values
    (booleans become rates). This is how the paper reports its tables.
    """
    out = {}
    for name, values in per_structure.items():
        v = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        v = v.astype(np.float64).reshape(-1)
        v = v[~np.isnan(v)]
        out[name] = float(v.mean()) if v.size else math.nan
    return out


class MetricAccumulator:
    """Collect per-structure metrics over many batches, plus the atom-pooled coordinate MAE.

    Example::

        acc = MetricAccumulator()
        for data in loader:
            out = model(data)
            acc.update(out.final_pos, out.final_cell, data)
        acc.compute()  # {MAE_POS: ..., SHAPE_DEV: ..., ..., POOLED_MAE_POS: ...}
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._values: dict[str, list[torch.Tensor]] = {}
        self._abs_sum = 0.0
        self._count = 0

    def update(self, pred_pos: torch.Tensor, pred_cell: torch.Tensor, data: Any) -> dict[str, torch.Tensor]:
        """Add one batch; returns its per-structure metrics."""
        m = batch_metrics(pred_pos, pred_cell, data)
        for k, v in m.items():
            self._values.setdefault(k, []).append(v.detach().double().cpu())
        diff = (pred_pos.detach() - data[keys.POS_R]).abs().double()
        self._abs_sum += float(diff.sum())
        self._count += diff.numel()
        return m

    def per_structure(self) -> dict[str, torch.Tensor]:
        """All per-structure values so far, each [num_structures]."""
        return {k: torch.cat(v) for k, v in self._values.items()}

    def compute(self) -> dict[str, float]:
        """Means over structures of every metric, plus ``POOLED_MAE_POS``."""
        out = summarize(self.per_structure())
        out[POOLED_MAE_POS] = self._abs_sum / self._count if self._count else math.nan
        return out


@dataclass(frozen=True)
class MatcherSettings:
    """Tolerances of pymatgen's ``StructureMatcher``.

    ``ltol`` is a fractional length tolerance, ``stol`` a site tolerance in units of
    (V / N)^(1/3), ``angle_tol`` in degrees. ``scale=False`` so a volume error is never forgiven
    (pymatgen's default rescales volumes).
    """

    name: str
    ltol: float
    stol: float
    angle_tol: float
    scale: bool = False
    primitive_cell: bool = True

    def matcher(self):
        from pymatgen.analysis.structure_matcher import StructureMatcher

        return StructureMatcher(ltol=self.ltol, stol=self.stol, angle_tol=self.angle_tol,
                                primitive_cell=self.primitive_cell, scale=self.scale)


#: Strict: 5% lattice lengths, 0.05 site tolerance (~0.1 A for typical densities), 1 degree.
STRICT = MatcherSettings("strict", ltol=0.05, stol=0.05, angle_tol=1.0)
#: Loose: pymatgen's default tolerances (ltol=0.2, stol=0.3, angle_tol=5), without volume scaling.
LOOSE = MatcherSettings("loose", ltol=0.2, stol=0.3, angle_tol=5.0)


def space_group_number(structure: Any, symprec: float = 0.1) -> int:
    """International space-group number by spglib (0 when spglib finds none)."""
    import spglib

    from e3relax.structures import structure_arrays

    pos, cell, z, _ = structure_arrays(structure)
    frac = pos @ np.linalg.inv(cell)
    ds = spglib.get_symmetry_dataset((cell, frac, z), symprec=symprec)
    if ds is None:
        return 0
    return int(ds.number if hasattr(ds, "number") else ds["number"])


#: seconds one StructureMatcher comparison (one pair, one tolerance setting) may take; a pair that
#: runs out counts as unmatched. Typical pairs take milliseconds; near-degenerate cells can take minutes.
MATCH_TIME_LIMIT = 10.0
#: a cell with V / (a b c) below this is degenerate (its vectors nearly coplanar; 1 for a cube,
#: 0.71 for the flattest Niggli-reduced cell)
MIN_CELL_FLATNESS = 0.05
#: a cell with less volume per atom than this (A^3) is degenerate (real crystals have > 5)
MIN_VOLUME_PER_ATOM = 0.5


class MatchTimeout(Exception):
    """A structure comparison ran past its time limit."""


def degenerate_cell(cell: Any, num_atoms: int) -> str:
    """Why a cell cannot be compared (non-finite, flat, or too little volume per atom); "" when it can.

    Shapes: cell [3, 3] (rows = lattice vectors).
    """
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(cell).all():
        return "non-finite cell"
    lengths = np.linalg.norm(cell, axis=1)
    volume = abs(float(np.linalg.det(cell)))
    flatness = volume / float(np.prod(lengths)) if lengths.all() else 0.0
    if flatness < MIN_CELL_FLATNESS:
        return f"flat cell (V / abc = {flatness:.3g} < {MIN_CELL_FLATNESS})"
    if volume / max(num_atoms, 1) < MIN_VOLUME_PER_ATOM:
        return f"cell volume {volume:.3g} A^3 for {num_atoms} atoms (< {MIN_VOLUME_PER_ATOM} A^3 per atom)"
    return ""


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`MatchTimeout` in the block after ``seconds`` of wall time (SIGALRM timer).

    Only the main thread of a process can receive the signal; elsewhere (or with ``seconds``
    None / 0) the block runs without a limit. A timer already armed by the caller is re-armed
    afterwards with what is left of it.
    """
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise MatchTimeout(f"no result within {seconds:g} s")

    t0 = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay > 0:
            left = previous_delay - (time.monotonic() - t0)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), previous_interval)


def match_metrics(
    pred_structures: Sequence[Any],
    ref_structures: Sequence[Any],
    settings: Iterable[MatcherSettings] = (STRICT, LOOSE),
    symprec: float = 0.1,
    time_limit: float | None = MATCH_TIME_LIMIT,
    ids: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """StructureMatcher match / RMSD and spglib space-group agreement, per structure.

    A predicted cell that :func:`degenerate_cell` rejects is not compared (it counts as unmatched,
    space group 0); a comparison that runs past ``time_limit`` seconds or that pymatgen fails on
    counts as unmatched for that setting. Each such pair is logged with its id.

    Args:
        pred_structures, ref_structures: equal-length sequences of Atoms or Structures.
        settings: matcher tolerances; each adds ``match_<name>`` (bool) and ``rmsd_<name>``
            (pymatgen's RMS displacement normalised by (V/N)^(1/3); NaN when not matched).
        symprec: spglib tolerance (A).
        time_limit: seconds per pair and setting (None: no limit; the limit needs the main thread).
        ids: structure ids for the log (default: the index).

    Returns:
        Dict of [B] arrays, plus ``spg_pred``, ``spg_ref`` (int), ``spg_match`` (bool),
        ``degenerate`` (bool: predicted cell rejected), ``match_timeout`` (bool: some setting ran
        out of time) and ``match_error`` (bool: pymatgen raised). ``summarize`` of it gives match
        rates and mean RMSD over matched structures.
    """
    from e3relax.structures import to_structure

    if len(pred_structures) != len(ref_structures):
        raise ValueError(f"match_metrics: {len(pred_structures)} predictions but {len(ref_structures)} references")
    preds = [to_structure(s) for s in pred_structures]
    refs = [to_structure(s) for s in ref_structures]
    names = [str(i) for i in ids] if ids is not None else [f"#{i}" for i in range(len(preds))]
    degenerate = np.array([bool(_why_degenerate(p, names[i])) for i, p in enumerate(preds)], dtype=bool)
    timeout = np.zeros(len(preds), dtype=bool)
    error = np.zeros(len(preds), dtype=bool)
    out: dict[str, np.ndarray] = {}
    for st in settings:
        sm = st.matcher()
        rms = np.full(len(preds), math.nan)
        for i, (p, r) in enumerate(zip(preds, refs)):
            if degenerate[i]:
                continue
            try:
                with _time_limit(time_limit):
                    rms[i] = _rms(sm, p, r)
            except MatchTimeout:
                timeout[i] = True
                log.warning("structure %s: %s match gave no result within %g s; counted as unmatched",
                            names[i], st.name, time_limit)
            except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
                error[i] = True
                log.warning("structure %s: %s match failed (%s: %s); counted as unmatched",
                            names[i], st.name, type(exc).__name__, exc)
        out[f"match_{st.name}"] = ~np.isnan(rms)
        out[f"rmsd_{st.name}"] = rms
    sp = np.array([0 if degenerate[i] else _space_group(s, symprec) for i, s in enumerate(preds)], dtype=np.int64)
    sr = np.array([_space_group(s, symprec) for s in refs], dtype=np.int64)
    out["spg_pred"], out["spg_ref"], out["spg_match"] = sp, sr, (sp == sr) & (sr > 0)
    out["degenerate"], out["match_timeout"], out["match_error"] = degenerate, timeout, error
    return out


def _why_degenerate(structure: Any, name: str) -> str:
    why = degenerate_cell(structure.lattice.matrix, len(structure))
    if why:
        log.warning("structure %s: predicted %s; not compared, counted as unmatched", name, why)
    return why


def _space_group(structure: Any, symprec: float) -> int:
    try:
        return space_group_number(structure, symprec)
    except Exception:  # noqa: BLE001 - spglib rejects some cells; "no space group" is the honest answer
        return 0


def structures_from_batch(pos: torch.Tensor, cell: torch.Tensor, z: torch.Tensor, batch: torch.Tensor,
                          pbc: torch.Tensor | None = None) -> list:
    """Split batched tensors into one ``ase.Atoms`` per structure (for :func:`match_metrics`).

    Shapes: pos [N, 3], cell [B, 3, 3], z [N], batch [N], pbc [B, 3] (default all periodic).
    """
    from e3relax.structures import arrays_to_atoms

    pos, cell, z, batch = (t.detach().cpu() for t in (pos, cell, z, batch))
    out = []
    for b in range(cell.shape[0]):
        sel = batch == b
        per = pbc[b].tolist() if pbc is not None else (True, True, True)
        out.append(arrays_to_atoms(pos[sel].double().numpy(), cell[b].double().numpy(), z[sel].numpy(), per))
    return out


def _rms(matcher: Any, pred: Any, ref: Any) -> float:
    res = matcher.get_rms_dist(pred, ref)
    return math.nan if res is None else float(res[0])
