"""Structure pairs -> graph records (plain numpy dicts) -> PyG ``Data`` -> ``Batch``.

A *record* is a dict of plain numpy arrays keyed by :mod:`e3relax.keys` names; it is what the
LMDB codec stores (no pickled objects). :func:`record_to_data` turns it into a
``torch_geometric.data.Data`` whose per-structure fields have a leading dimension 1, so that
:func:`collate` (``Batch.from_data_list``) stacks them into ``[B, ...]`` and increments
``edge_index``.

Record fields (N atoms, E edges, T trajectory frames):
    POS_U [N,3] f64, CELL_U [3,3] f64, Z [N] int64, PBC [3] bool, EDGE_INDEX [2,E] int64,
    CELL_OFFSETS [E,3] int64, EDGE_TYPE [E] int64, ID str, ROTATION_REMOVED float (degrees);
    labelled only: POS_R [N,3], CELL_R [3,3]; optional: ENERGY float, TRAJ_POS [N,T,3],
    TRAJ_CELL [T,3,3], TAGS [N] int64, FIXED [N] bool.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from e3relax import keys
from e3relax.graph.base import GraphEdges
from e3relax.structures import (
    PairValidationError,
    ValidationThresholds,
    polar_rotation,
    rotation_angle_deg,
    structure_arrays,
    unwrap_positions,
    validate_pair,
    validate_structure,
)

__all__ = ["make_record", "record_problem", "record_to_data", "collate", "structure_to_data", "GraphFn"]

logger = logging.getLogger(__name__)

#: A graph builder: ``(pos [N,3], cell [3,3], pbc [3]) -> GraphEdges``.
GraphFn = Callable[[np.ndarray, np.ndarray, np.ndarray], GraphEdges]


def _edges(graph: GraphFn, pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray, sid: str) -> GraphEdges:
    """Run the builder and check its output."""
    g = graph(pos, cell, pbc)
    ei = np.asarray(g.edge_index, dtype=np.int64)
    off = np.asarray(g.cell_offsets, dtype=np.int64)
    et = np.asarray(g.edge_type, dtype=np.int64)
    e = ei.shape[1] if ei.ndim == 2 else -1
    if ei.shape != (2, e) or off.shape != (e, 3) or et.shape != (e,):
        raise ValueError(f"structure '{sid}': graph builder returned edge_index {ei.shape}, "
                         f"cell_offsets {off.shape}, edge_type {et.shape}; expected [2,E], [E,3], [E]")
    if e and (ei.min() < 0 or ei.max() >= len(pos)):
        raise ValueError(f"structure '{sid}': graph builder returned atom indices outside 0..{len(pos) - 1}")
    if e == 0:
        logger.warning("structure '%s': the graph has no edges", sid)
    return GraphEdges(ei, off, et)


def _trajectory_arrays(trajectory: Any, z: np.ndarray, sid: str) -> tuple[np.ndarray, np.ndarray]:
    """Trajectory as (pos [T,N,3], cell [T,3,3]) from frames or a (pos, cell) pair of arrays.

    Frames given as structures must have the unrelaxed structure's species sequence.
    """
    n = len(z)
    if isinstance(trajectory, tuple) and len(trajectory) == 2 and isinstance(trajectory[0], np.ndarray):
        pos, cell = (np.asarray(a, dtype=np.float64) for a in trajectory)
    else:
        frames = [structure_arrays(f) for f in trajectory]
        if not frames:
            raise PairValidationError(sid, "trajectory", "trajectory has no frames")
        for t, f in enumerate(frames):
            if len(f[0]) != n:
                raise PairValidationError(sid, "atom_count", f"trajectory frame {t} has {len(f[0])} atoms, not {n}")
            if not np.array_equal(f[2], z):
                raise PairValidationError(sid, "species", f"trajectory frame {t} has a different species sequence "
                                          "than the unrelaxed structure (atom order must agree)")
        pos, cell = np.stack([f[0] for f in frames]), np.stack([f[1] for f in frames])
    if pos.ndim != 3 or pos.shape[1:] != (n, 3) or cell.shape != (pos.shape[0], 3, 3):
        raise PairValidationError(sid, "trajectory", f"trajectory positions {pos.shape} / cells {cell.shape} "
                                  f"do not match [T,{n},3] / [T,3,3]")
    if not (np.isfinite(pos).all() and np.isfinite(cell).all()):
        raise PairValidationError(sid, "non_finite", "trajectory has non-finite positions or cells")
    return pos, cell


def _derotate(cell_u, pos, cell, keep_frame: bool, sid: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Strip the rigid rotation of one relaxed/trajectory frame (unless keep_frame)."""
    if keep_frame:
        return pos, cell, 0.0
    try:
        r = polar_rotation(cell_u, cell)
    except ValueError as exc:
        raise PairValidationError(sid, "handedness", str(exc)) from exc
    return pos @ r.T, cell @ r.T, rotation_angle_deg(r)


def _trajectory_path(pos_u: np.ndarray, tpos: np.ndarray, tcell: np.ndarray, pbc: np.ndarray,
                     end: np.ndarray | None) -> np.ndarray:
    """Continuous trajectory: each frame unwrapped to the image nearest the previous frame.

    The first frame is unwrapped towards ``pos_u``. If ``end`` (POS_R) is given, each atom's whole
    path is then shifted by one integer fractional vector k (``p_t - k @ L_t`` in every frame) so
    that the path ends at the ``end`` image. Shapes: tpos [T,N,3], tcell [T,3,3] -> [T,N,3].
    """
    out = np.empty_like(tpos)
    prev = pos_u
    for t in range(len(tpos)):
        out[t] = prev = unwrap_positions(prev, tpos[t], tcell[t], pbc)
    if end is not None:
        k = np.rint((out[-1] - end) @ np.linalg.inv(tcell[-1])) * pbc  # [N, 3]
        out -= np.einsum("nk,tkd->tnd", k, tcell)
    return out


def make_record(
    unrelaxed: Any,
    relaxed: Any | None,
    sid: str,
    graph: GraphFn,
    *,
    energy: float | None = None,
    trajectory: Any | None = None,
    keep_frame: bool = False,
    thresholds: ValidationThresholds | None = None,
    canonical: float | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Validate a structure pair and build its graph record.

    Steps: validate (:func:`~e3relax.structures.validate_pair`, or ``validate_structure`` when
    ``relaxed`` is None); remove the rigid rotation of the relaxed frame (polar decomposition,
    skipped with ``keep_frame=True``); unwrap relaxed positions to the image nearest the unrelaxed
    atoms; build the graph on the UNRELAXED structure.

    Args:
        unrelaxed: ase.Atoms or pymatgen Structure.
        relaxed: the relaxed counterpart (same atom order), or None for an unlabelled record.
        sid: structure id, used in every error message.
        graph: graph builder, e.g. ``GRAPHS.build({"name": "periodic_multi_edge", ...})``.
        energy: optional relaxed energy (eV/atom).
        trajectory: optional relaxation trajectory: a sequence of Atoms/Structures or a tuple
            ``(pos [T,N,3], cell [T,3,3])``, same atom order. Each frame is de-rotated like
            POS_R (its own polar decomposition against the unrelaxed cell) and unwrapped along
            the path (each frame to the image nearest the previous one, so no atom jumps by a
            lattice vector between frames); each atom's path is then shifted by a whole
            fractional lattice vector so that it ends at the POS_R image.
        keep_frame: keep the relaxed structure's raw frame (no rotation removal).
        thresholds: validation limits.
        canonical: put the pair into the frame ``predict`` uses (primitive cell, reduced basis,
            atom 0 at the origin; :class:`~e3relax.predict.canonical.CanonicalFrame` at this symprec
            in A) before anything else, the label and trajectory mapped the same way; None: the
            structure's own frame.

    Returns:
        ``(record, warnings)``; see the module docstring for the record fields.

    Raises:
        PairValidationError: for invalid input, naming ``sid``.
    """
    sid = str(sid)
    if relaxed is None:
        warnings = validate_structure(unrelaxed, sid, thresholds)
    else:
        warnings = validate_pair(unrelaxed, relaxed, sid, thresholds)
    pos_u, cell_u, z, pbc = structure_arrays(unrelaxed)
    frame = None
    if canonical is not None:
        from e3relax.predict.canonical import CanonicalFrame

        frame = CanonicalFrame.from_structure(pos_u, cell_u, z, pbc, float(canonical))
        pos_u, cell_u, z = frame.positions, frame.cell, frame.numbers
    rec: dict[str, Any] = {keys.POS_U: pos_u, keys.CELL_U: cell_u, keys.Z: z, keys.PBC: pbc, keys.ID: sid}
    angle = 0.0
    if relaxed is not None:
        pos_r, cell_r, _, _ = structure_arrays(relaxed)
        if frame is not None:
            pos_r, cell_r = frame.to_frame(pos_r, cell_r)
        pos_r, rec[keys.CELL_R], angle = _derotate(cell_u, pos_r, cell_r, keep_frame, sid)
        rec[keys.POS_R] = unwrap_positions(pos_u, pos_r, rec[keys.CELL_R], pbc)
    rec[keys.ROTATION_REMOVED] = float(angle)
    g = _edges(graph, pos_u, cell_u, pbc, sid)
    rec[keys.EDGE_INDEX], rec[keys.CELL_OFFSETS], rec[keys.EDGE_TYPE] = g.edge_index, g.cell_offsets, g.edge_type
    if energy is not None:
        rec[keys.ENERGY] = float(energy)
    extra = _tags_and_fixed(unrelaxed, len(frame.index) if frame is not None else len(z))
    rec.update({k: v[frame.representatives] for k, v in extra.items()} if frame is not None else extra)
    if trajectory is not None:
        tpos, tcell = _trajectory_arrays(trajectory, structure_arrays(unrelaxed)[2], sid)
        if frame is not None:
            tpos, tcell = (np.stack(a) for a in zip(*(frame.to_frame(p, c) for p, c in zip(tpos, tcell))))
        frames = [_derotate(cell_u, p, c, keep_frame, sid) for p, c in zip(tpos, tcell)]
        tcell = np.stack([f[1] for f in frames])
        path = _trajectory_path(pos_u, np.stack([f[0] for f in frames]), tcell, pbc, rec.get(keys.POS_R))
        rec[keys.TRAJ_POS] = path.transpose(1, 0, 2)  # [N, T, 3]
        rec[keys.TRAJ_CELL] = tcell  # [T, 3, 3]
    return rec, warnings


def _tags_and_fixed(x: Any, n: int) -> dict[str, np.ndarray]:
    """OC22-style per-atom tags (when any is non-zero) and fixed atoms (ASE ``FixAtoms``) of an Atoms."""
    out: dict[str, np.ndarray] = {}
    if not hasattr(x, "get_tags"):
        return out
    tags = np.asarray(x.get_tags(), dtype=np.int64)
    if tags.any():
        out[keys.TAGS] = tags
    fixed = np.zeros(n, dtype=bool)
    for c in getattr(x, "constraints", []) or []:
        if type(c).__name__ == "FixAtoms":
            fixed[np.asarray(c.get_indices(), dtype=np.int64)] = True
    if fixed.any():
        out[keys.FIXED] = fixed
    return out


def _shape_problem(record: dict[str, Any], n: int) -> str | None:
    """The first field whose shape disagrees with N atoms (or with E edges, T frames), if any."""
    e = np.shape(record[keys.EDGE_INDEX])[1] if np.ndim(record[keys.EDGE_INDEX]) == 2 else -1
    t = np.shape(record[keys.TRAJ_CELL])[0] if keys.TRAJ_CELL in record and np.ndim(record[keys.TRAJ_CELL]) else -1
    expected = {keys.POS_U: (n, 3), keys.POS_R: (n, 3), keys.CELL_U: (3, 3), keys.CELL_R: (3, 3),
                keys.EDGE_INDEX: (2, e), keys.CELL_OFFSETS: (e, 3), keys.EDGE_TYPE: (e,), keys.PBC: (3,),
                keys.TAGS: (n,), keys.FIXED: (n,), keys.TRAJ_POS: (n, t, 3), keys.TRAJ_CELL: (t, 3, 3)}
    for k, shape in expected.items():
        if k in record and tuple(np.shape(record[k])) != shape:
            return f"field '{k}' has shape {list(np.shape(record[k]))}, expected {list(shape)} for {n} atoms" + (
                f" and {e} edges" if k in (keys.CELL_OFFSETS, keys.EDGE_TYPE) else "")
    return None


def _edge_problem(record: dict[str, Any], n: int, cutoff: float | None) -> str | None:
    """Edge indices in range, self-image edges i -> i, no duplicate edge, radius edges within the cutoff."""
    ei = np.asarray(record[keys.EDGE_INDEX], dtype=np.int64)
    if ei.shape[1] == 0:
        return None
    bad = np.flatnonzero((ei < 0).any(0) | (ei >= n).any(0))
    if bad.size:
        return f"edge {int(bad[0])} joins atoms {ei[:, bad[0]].tolist()}, outside 0..{n - 1} ({bad.size} such edges)"
    off = np.asarray(record[keys.CELL_OFFSETS], dtype=np.int64)
    et = np.asarray(record.get(keys.EDGE_TYPE, np.zeros(ei.shape[1], np.int64)), dtype=np.int64)
    self_img = et == keys.EDGE_SELF_IMAGE
    bad = np.flatnonzero(self_img & ((ei[0] != ei[1]) | ~off.any(1)))
    if bad.size:
        return f"self-image edge {int(bad[0])} joins atoms {ei[:, bad[0]].tolist()} with offset {off[bad[0]].tolist()}"
    span = int(np.abs(off).max()) * 2 + 1
    code = ((et * n + ei[0]) * n + ei[1]) * span**3 + ((off + span // 2) * np.array([span**2, span, 1])).sum(1)
    uniq, first, counts = np.unique(code, return_index=True, return_counts=True)
    if uniq.size != code.size:
        k = int(first[np.argmax(counts > 1)])
        return f"edge {k} ({ei[0, k]} -> {ei[1, k]}, offset {off[k].tolist()}) appears more than once"
    radius = ~self_img
    pos, cell = np.asarray(record[keys.POS_U], np.float64), np.asarray(record[keys.CELL_U], np.float64)
    length = np.linalg.norm(pos[ei[0]] + off @ cell - pos[ei[1]], axis=1)
    bad = np.flatnonzero(radius & (length < 1e-8))
    if bad.size:
        return f"edge {int(bad[0])} ({ei[0, bad[0]]} -> {ei[1, bad[0]]}) has zero length"
    if cutoff is not None:
        bad = np.flatnonzero(radius & (length > float(cutoff) * (1 + 1e-6) + 1e-9))
        if bad.size:
            k = int(bad[0])
            return (f"edge {k} ({ei[0, k]} -> {ei[1, k]}, offset {off[k].tolist()}) is {length[k]:.3f} A long, "
                    f"beyond the graph's cutoff {float(cutoff):g} A ({bad.size} such edges)")
    return None


def record_problem(record: dict[str, Any], natoms: int | None = None, cutoff: float | None = None) -> str | None:
    """Why a decoded record cannot be trusted, or None when it is consistent.

    Checks: the required fields exist; atom, edge and frame counts agree between fields (and with
    ``natoms``, the count the database metadata lists); atomic numbers lie in 1..118; positions and
    cells are finite and cells not singular; edge indices lie in 0..N-1; self-image edges join an
    atom to its own image; no edge appears twice; radius edges are not longer than the ``cutoff``
    of the graph that built them (when given).
    """
    missing = [k for k in (keys.POS_U, keys.CELL_U, keys.Z, keys.EDGE_INDEX, keys.CELL_OFFSETS) if k not in record]
    if missing:
        return f"no field {', '.join(repr(k) for k in missing)}"
    z = np.asarray(record[keys.Z])
    if z.ndim != 1 or z.size == 0:
        return f"field '{keys.Z}' has shape {list(z.shape)}: expected one atomic number per atom"
    n = int(z.size)
    if natoms is not None and n != int(natoms):
        return f"{n} atoms, but the database metadata lists {int(natoms)} for this record"
    problem = _shape_problem(record, n)
    if problem:
        return problem
    if z.min() < 1 or z.max() > 118:
        return f"atomic number {int(z.min() if z.min() < 1 else z.max())} outside 1..118"
    for k in (keys.POS_U, keys.CELL_U, keys.POS_R, keys.CELL_R, keys.TRAJ_POS, keys.TRAJ_CELL):
        if k in record and not np.isfinite(np.asarray(record[k], dtype=np.float64)).all():
            return f"field '{k}' holds non-finite values (NaN or infinity)"
    for k in (keys.CELL_U, keys.CELL_R):
        if k in record and abs(np.linalg.det(np.asarray(record[k], dtype=np.float64))) < 1e-6:
            return f"field '{k}' is a singular cell (volume ~0)"
    return _edge_problem(record, n, cutoff)


_FLOAT_NODE = (keys.POS_U, keys.POS_R, keys.TRAJ_POS)
_FLOAT_GRAPH = (keys.CELL_U, keys.CELL_R, keys.TRAJ_CELL)


def _scalar(record: dict, key: str, default: float) -> float:
    v = record.get(key, None)
    if v is None:
        return default
    return float(np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v).reshape(-1)[0])


def record_to_data(record: dict[str, Any], dtype: torch.dtype = torch.float32):
    """Turn a record (numpy arrays or tensors) into a ``torch_geometric.data.Data``.

    Per-structure fields get a leading 1 so that batching stacks them: CELL_U / CELL_R [1,3,3],
    NATOMS [1], PBC [1,3], ENERGY [1] (NaN if unknown), ROTATION_REMOVED [1], TRAJ_CELL [1,T,3,3].
    Node fields keep [N, ...] (POS_U, POS_R, Z, TRAJ_POS, TAGS, FIXED); edge fields EDGE_INDEX
    [2,E], CELL_OFFSETS [E,3], EDGE_TYPE [E]; ID is a ``str``. Floats are cast to ``dtype``.
    """
    from torch_geometric.data import Data

    sid = record.get(keys.ID, "")
    sid = sid.decode() if isinstance(sid, bytes) else str(sid)
    for k in (keys.POS_U, keys.CELL_U, keys.Z, keys.EDGE_INDEX, keys.CELL_OFFSETS):
        if k not in record:
            raise KeyError(f"structure '{sid}': record has no field '{k}'")

    def t(k: str, dt: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.asarray(record[k]) if not isinstance(record[k], torch.Tensor) else record[k]).to(dt)

    data = Data()
    n = int(t(keys.Z, torch.long).numel())
    for k in _FLOAT_NODE:
        if k in record:
            data[k] = t(k, dtype)
    for k in _FLOAT_GRAPH:
        if k in record:
            data[k] = t(k, dtype).unsqueeze(0)
    data[keys.Z] = t(keys.Z, torch.long).reshape(n)
    for k, dt in ((keys.TAGS, torch.long), (keys.FIXED, torch.bool)):
        if k in record:
            data[k] = t(k, dt).reshape(n)
    data[keys.EDGE_INDEX] = t(keys.EDGE_INDEX, torch.long).reshape(2, -1)
    data[keys.CELL_OFFSETS] = t(keys.CELL_OFFSETS, torch.long).reshape(-1, 3)
    e = data[keys.EDGE_INDEX].shape[1]
    if keys.EDGE_TYPE in record:
        data[keys.EDGE_TYPE] = t(keys.EDGE_TYPE, torch.long).reshape(e)
    else:
        data[keys.EDGE_TYPE] = torch.full((e,), keys.EDGE_RADIUS, dtype=torch.long)
    pbc = t(keys.PBC, torch.bool).reshape(1, 3) if keys.PBC in record else torch.ones(1, 3, dtype=torch.bool)
    data[keys.PBC] = pbc
    data[keys.NATOMS] = torch.tensor([n], dtype=torch.long)
    data[keys.ENERGY] = torch.tensor([_scalar(record, keys.ENERGY, math.nan)], dtype=dtype)
    data[keys.ROTATION_REMOVED] = torch.tensor([_scalar(record, keys.ROTATION_REMOVED, 0.0)], dtype=dtype)
    data[keys.ID] = sid
    data.num_nodes = n
    return data


def collate(data_list: Sequence[Any]):
    """Batch ``Data`` objects with ``Batch.from_data_list`` (edge_index is incremented).

    Raises:
        ValueError: when the structures do not carry the same fields (e.g. labelled and unlabelled
            mixed) or their trajectories have different lengths, naming the offending ids.
    """
    from torch_geometric.data import Batch

    if not data_list:
        raise ValueError("collate: empty list of structures")
    ref = set(data_list[0].keys())
    for d in data_list[1:]:
        if set(d.keys()) != ref:
            raise ValueError(f"collate: structures '{data_list[0][keys.ID]}' and '{d[keys.ID]}' carry different "
                             f"fields ({sorted(ref ^ set(d.keys()))}); do not mix labelled and unlabelled records")
    if keys.TRAJ_CELL in ref:
        lengths = {int(d[keys.TRAJ_CELL].shape[1]) for d in data_list}
        if len(lengths) > 1:
            ids = [d[keys.ID] for d in data_list]
            raise ValueError(f"collate: trajectories of {ids} have different lengths {sorted(lengths)}")
    return Batch.from_data_list(list(data_list))


def structure_to_data(x: Any, graph: GraphFn, sid: str = "", dtype: torch.dtype = torch.float32,
                      thresholds: ValidationThresholds | None = None):
    """Validate one unlabelled structure (Atoms or Structure) and build its ``Data`` for prediction.

    Warnings (short contacts) are logged. Raises :class:`PairValidationError` naming ``sid``.
    """
    rec, warnings = make_record(x, None, sid, graph, thresholds=thresholds)
    for w in warnings:
        logger.warning(w)
    return record_to_data(rec, dtype=dtype)
