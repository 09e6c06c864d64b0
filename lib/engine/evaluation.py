"""The one evaluation path: run a model (or an ensemble :class:`~e3relax.predict.Relaxer`) over a
labelled dataset and return a per-structure table.

``e3relax evaluate``, the comparison benchmark and the uncertainty scoring all call
:func:`evaluate`; training validation runs the same Ignite evaluator engine and metric
(:mod:`e3relax.engine.evaluator`). Every row holds the paper's metrics for the prediction and for the
Dummy (the unrelaxed input), plus any per-structure extras the predictor reports (an ensemble's
``uncertainty``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from ignite.engine import Events

from e3relax.model_base import check_graph
from e3relax import keys as K
from e3relax.device import resolve_device
from e3relax.engine.data import eval_loader
from e3relax.engine.evaluator import create_evaluator
from e3relax.metrics import structures_from_batch

__all__ = ["EvalTable", "evaluate", "NON_METRIC_COLUMNS"]

#: per-structure columns of :class:`~e3relax.engine.evaluator.RelaxMetrics` that are not metrics
NON_METRIC_COLUMNS = ("id", "natoms", "lattice_pred", "lattice_ref", "lattice_dummy")


@dataclass
class EvalTable:
    """Per-structure results over a dataset, in dataset order.

    Attributes:
        ids: structure ids.
        natoms: atoms per structure.
        metrics: metric name -> [B] array, for the prediction.
        dummy: the same metrics for the Dummy (the unrelaxed input).
        extra: other per-structure columns the predictor reported (e.g. ``uncertainty``).
        summary: means over structures (``dummy/<name>`` for the Dummy) and the atom-pooled
            coordinate MAE.
        structures, references, inputs: predicted, relaxed and unrelaxed structures as ``ase.Atoms``
            (filled with ``keep_structures=True``).
    """

    ids: list[str] = field(default_factory=list)
    natoms: list[int] = field(default_factory=list)
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    dummy: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    structures: list[Any] = field(default_factory=list)
    references: list[Any] = field(default_factory=list)
    inputs: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_rows(cls, rows: dict[str, list], summary: dict[str, float], extras: tuple[str, ...] = ()) -> "EvalTable":
        """Split the rows of :class:`~e3relax.engine.evaluator.RelaxMetrics` into a table."""
        skip = set(NON_METRIC_COLUMNS) | set(extras)
        arr = {k: np.asarray(v, dtype=np.float64) for k, v in rows.items() if k not in NON_METRIC_COLUMNS}
        return cls(ids=[str(i) for i in rows.get("id", [])], natoms=[int(n) for n in rows.get("natoms", [])],
                   metrics={k: v for k, v in arr.items() if k not in skip and not k.startswith("dummy/")},
                   dummy={k[len("dummy/"):]: v for k, v in arr.items() if k.startswith("dummy/")},
                   extra={k: arr[k] for k in extras if k in arr}, summary=dict(summary))

    def columns(self) -> dict[str, np.ndarray]:
        """Flat columns: ``id``, ``natoms``, each metric, ``dummy_<metric>`` and the extras."""
        out: dict[str, np.ndarray] = {"id": np.asarray(self.ids), "natoms": np.asarray(self.natoms)}
        out.update(self.metrics)
        out.update({f"dummy_{k}": v for k, v in self.dummy.items()})
        out.update(self.extra)
        return out


def _ids(batch: Any) -> list[str]:
    ids = batch[K.ID] if K.ID in batch else [""] * batch.num_graphs
    return [str(i) for i in (ids.tolist() if torch.is_tensor(ids) else ids)]


def _keep_structures(table: EvalTable):
    def collect(engine: Any) -> None:
        pos, cell, batch, _ = engine.state.output
        pbc = batch[K.PBC].reshape(-1, 3) if K.PBC in batch else None
        z, b = batch[K.Z], batch[K.BATCH]
        table.structures += structures_from_batch(pos, cell, z, b, pbc)
        table.references += structures_from_batch(batch[K.POS_R], batch[K.CELL_R].reshape(-1, 3, 3), z, b, pbc)
        table.inputs += structures_from_batch(batch[K.POS_U], batch[K.CELL_U].reshape(-1, 3, 3), z, b, pbc)
    return collect


def _setting(predictor: Any, device: Any, dtype: torch.dtype | None) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of a model's parameters or a Relaxer, unless given."""
    if hasattr(predictor, "predict_batch"):
        return resolve_device(device or predictor.device), dtype or predictor.dtype
    params = list(predictor.parameters())
    dev = resolve_device(device) if device is not None else (params[0].device if params else torch.device("cpu"))
    dt = dtype or (params[0].dtype if params else torch.float64)
    predictor.to(device=dev, dtype=dt)
    return dev, dt


def evaluate(predictor: Any, dataset: Any, batch_size: int = 16, device: Any = None,
             dtype: torch.dtype | None = None, num_workers: int = 0, max_structures: int | None = None,
             keep_structures: bool = False, progress: str | None = "evaluate") -> EvalTable:
    """Score ``predictor`` on a labelled dataset, structure by structure.

    Args:
        predictor: a model (its last layer is the prediction) or an object with
            ``predict_batch(batch)`` (an ensemble :class:`~e3relax.predict.Relaxer`).
        dataset: a map-style dataset of records with labels.
        batch_size: structures per forward pass.
        device, dtype: default: the model's (or the Relaxer's) own.
        num_workers: data loader workers.
        max_structures: score the first K structures only.
        keep_structures: also return the predicted, relaxed and unrelaxed structures as ``ase.Atoms``.
        progress: progress-bar label, or None for no bar.
    """
    for member in getattr(predictor, "models", [predictor]):
        check_graph(member, dataset)  # a model that needs another graph refuses the data
    dev, dt = _setting(predictor, device, dtype)
    engine = create_evaluator(predictor, dev, dt)
    table = EvalTable()
    if keep_structures:
        engine.add_event_handler(Events.ITERATION_COMPLETED, _keep_structures(table))
    if progress:
        from e3relax.progress import attach_progress

        attach_progress(engine, progress)
    engine.run(eval_loader(dataset, batch_size, num_workers, max_structures))
    rows = engine.relax_metrics.rows
    extras = tuple(getattr(predictor, "extra_columns", ()))
    summary = {k: float(v) for k, v in engine.state.metrics.items() if isinstance(v, (int, float))}
    full = EvalTable.from_rows(rows, summary, extras)
    full.structures, full.references, full.inputs = table.structures, table.references, table.inputs
    return full
