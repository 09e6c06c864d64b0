"""Per-item work of a conversion, run in worker processes: task -> item -> record bytes.

Kept apart from the driver so that a worker's state (importer, graph builder, settings) is set
once per process by :func:`init_worker` and every call of :func:`process` returns a small,
picklable dict: either a converted record (npz bytes + what the report needs) or a skip.
A worker stops as soon as the process that started it dies, however it died (even SIGKILL):
see :func:`die_with_parent`.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from e3relax import keys
from e3relax.datasets.importers.base import Importer, RawPair, Skipped
from e3relax.datasets.lmdb_format import encode_record
from e3relax.datasets.splits import FRAMES_SPLIT, assign_split

log = logging.getLogger(__name__)


@dataclass
class ConvertSettings:
    """What every worker needs besides the importer.

    Attributes:
        graph: graph-builder spec (``{"name": ..., **params}``) or a built builder.
        ratio: split fractions by name (from ``parse_ratio``) for items without a published split.
        seed: seed of the id-hash split.
        keep_frame: keep the raw frame of relaxed structures (no rigid-rotation removal).
        thresholds: ``ValidationThresholds`` or None for the defaults.
        canonical_frame: symprec (A) of the canonical frame every pair is put into (the frame
            ``predict`` uses); None: each structure's own frame.
    """

    graph: Any
    ratio: dict
    seed: int = 0
    keep_frame: bool = False
    thresholds: Any = None
    canonical_frame: float | None = None


def build_graph(spec: Any):
    """A graph builder from a spec, or the object itself when it is already callable."""
    from e3relax.registry import GRAPHS

    return GRAPHS.build(spec)


def graph_params(spec: Any) -> dict:
    """Parameters of a graph spec as stored in metadata (``builder.params()`` plus its name)."""
    builder = build_graph(spec)
    params = dict(builder.params()) if hasattr(builder, "params") else {}
    name = getattr(builder, "registry_name", None) or (spec.get("name") if isinstance(spec, dict) else None)
    if name and "name" not in params:
        params["name"] = name
    return params


_STATE: dict[str, Any] = {}

#: ``prctl`` option: signal this process when its parent dies (Linux)
PR_SET_PDEATHSIG = 1


def _watch_parent(parent: int, interval: float) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def die_with_parent(parent: int, interval: float = 0.5) -> str:
    """Make this process end when process ``parent`` ends.

    On Linux the kernel sends SIGTERM on the parent's death (``prctl(PR_SET_PDEATHSIG)``);
    elsewhere a daemon thread checks the parent id every ``interval`` seconds. A parent that
    died before this was set up ends this process at once.

    Returns:
        ``"pdeathsig"`` or ``"watchdog"``: how it is done.
    """
    how = "watchdog"
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0:
                how = "pdeathsig"
        except (OSError, AttributeError):  # pragma: no cover - no usable libc
            pass
    if os.getppid() != parent:  # the parent is already gone
        os._exit(1)
    if how == "watchdog":
        threading.Thread(target=_watch_parent, args=(parent, interval), daemon=True, name="parent-watch").start()
    return how


def init_worker(importer: Importer, settings: ConvertSettings, limit_threads: bool = True,
                parent: int | None = None) -> None:
    """Set the per-process state (called once per worker by the pool); with ``parent`` (the pid of
    the process that owns the pool) the worker ends when that process dies."""
    if parent is not None:
        die_with_parent(parent)
    if limit_threads:
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover
            pass
    _STATE.update(importer=importer, settings=settings, graph=build_graph(settings.graph))


def _skip(i: int, sid: str, code: str, reason: str, source: str = "") -> dict:
    return {"i": i, "ok": False, "id": str(sid), "code": code, "reason": reason, "source": source}


def _task_id(task: Any) -> str:
    return str(task[0] if isinstance(task, tuple) and task else task)[:200]


def _raw_rotation(record: dict, sid: str) -> float | None:
    """Rigid rotation (degrees) between the frames of a pair kept in its raw frame (report only)."""
    from e3relax.structures import polar_rotation, rotation_angle_deg

    try:
        return float(rotation_angle_deg(polar_rotation(record[keys.CELL_U], record[keys.CELL_R])))
    except ValueError:
        log.debug("structure '%s': no rotation angle for the report", sid, exc_info=True)
        return None


def _elements(z: Any) -> dict[str, int]:
    """Atoms per element of one record, ``{"Z": count}`` (summed into the shard metadata)."""
    import numpy as np

    values, counts = np.unique(np.asarray(z, dtype=np.int64), return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts)}


def _frame_results(i: int, item: RawPair, settings: ConvertSettings) -> list[dict]:
    """One result per frame of ``item`` as an extra training pair ``(frame -> relaxed)``, id
    ``<parent>:frame<k>``, tagged with its parent (a frame that fails validation is skipped)."""
    from e3relax.records import make_record
    from e3relax.structures import PairValidationError

    out = []
    for k, frame in enumerate(item.frames or ()):
        fid = f"{item.id}:frame{k:03d}"
        try:
            record, warnings = make_record(frame, item.relaxed, fid, _STATE["graph"], energy=item.energy,
                                           keep_frame=settings.keep_frame, thresholds=settings.thresholds,
                                           canonical=settings.canonical_frame)
            record[keys.PARENT] = str(item.id)
            data = encode_record(record)
        except PairValidationError as exc:
            out.append({**_skip(i, fid, exc.code, exc.reason, item.source), "frame": True})
            continue
        except Exception as exc:  # keep converting the rest; the report names this one
            out.append({**_skip(i, fid, "error", f"{type(exc).__name__}: {exc}", item.source), "frame": True})
            continue
        angle = record.get(keys.ROTATION_REMOVED)
        out.append({"i": i, "ok": True, "id": fid, "split": FRAMES_SPLIT, "data": data, "frame": True,
                    "parent": str(item.id), "natoms": int(len(record[keys.Z])), "elements": _elements(record[keys.Z]),
                    "warnings": [str(w) for w in warnings],
                    "rotation_deg": None if angle is None else float(angle), "labelled": True, "source": item.source})
    return out


def process(job: tuple[int, Any]) -> list[dict]:
    """Load task ``job[1]`` (index ``job[0]``), validate it and encode its record.

    Never raises for bad input: the result says ``ok=False`` with a code and reason instead.
    Returns the item's result, then one per frame (:data:`FRAMES_SPLIT`) when the item carries
    frames and lands in the training split; frames of a validation or test parent are not written
    (counted as ``frames_held_out``), so no parent's frames cross the split.
    """
    from e3relax.records import make_record
    from e3relax.structures import PairValidationError

    i, task = job
    importer: Importer = _STATE["importer"]
    settings: ConvertSettings = _STATE["settings"]
    try:
        item = importer.load(task)
    except Exception as exc:  # an importer bug or odd file must not stop the conversion
        return [_skip(i, _task_id(task), "unreadable", f"{type(exc).__name__}: {exc}")]
    if isinstance(item, Skipped):
        return [_skip(i, item.id, item.code, item.reason, item.source)]
    if not isinstance(item, RawPair):
        return [_skip(i, _task_id(task), "error", f"importer returned {type(item).__name__}, not RawPair/Skipped")]
    try:
        record, warnings = make_record(item.unrelaxed, item.relaxed, item.id, _STATE["graph"], energy=item.energy,
                                       trajectory=item.trajectory, keep_frame=settings.keep_frame,
                                       thresholds=settings.thresholds, canonical=settings.canonical_frame)
        data = encode_record(record)
    except PairValidationError as exc:
        return [_skip(i, item.id, exc.code, exc.reason, item.source)]
    except Exception as exc:  # keep converting the rest; the report names this one
        log.debug("structure '%s' failed", item.id, exc_info=True)
        return [_skip(i, item.id, "error", f"{type(exc).__name__}: {exc}", item.source)]
    split = item.split or assign_split(item.id, settings.ratio, settings.seed)
    angle = record.get(keys.ROTATION_REMOVED)
    if settings.keep_frame and keys.CELL_R in record:
        angle = _raw_rotation(record, item.id)
    frames = item.frames if item.frames and item.relaxed is not None else []
    result = {"i": i, "ok": True, "id": str(item.id), "split": split, "data": data, "natoms": int(len(record[keys.Z])),
              "elements": _elements(record[keys.Z]),
              "warnings": [str(w) for w in list(item.warnings) + list(warnings)],
              "rotation_deg": None if angle is None else float(angle), "labelled": item.relaxed is not None,
              "source": item.source, "frames_held_out": 0 if split == "train" else len(frames)}
    return [result] + (_frame_results(i, item, settings) if split == "train" else [])
