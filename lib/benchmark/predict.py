"""Test-set predictions of a trained model, per-structure metrics, and inference timing.

Per-structure metrics are those of :func:`e3relax.metrics.structure_metrics` (the paper's
coordinate MAE, shape deviation and volume MAE, plus lattice-parameter errors), for the model and
for the Dummy prediction (the unrelaxed input). Structures are returned as ``ase.Atoms`` so that
StructureMatcher, spglib and CHGNet can use them.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from e3relax import keys as K
from e3relax.engine.data import collate, eval_loader, prepare_batch
from e3relax.metrics import structure_metrics, structures_from_batch

__all__ = ["Predictions", "predict", "dummy_predictions", "time_inference", "count_parameters", "subset"]

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Per-structure results over a dataset, in dataset order.

    Attributes:
        ids: structure ids.
        natoms: atoms per structure.
        metrics: metric name -> [B] array.
        structures: predicted structures (``ase.Atoms``).
        references: relaxed labels (``ase.Atoms``), in the frame of the input.
        inputs: unrelaxed inputs (``ase.Atoms``).
    """

    ids: list[str] = field(default_factory=list)
    natoms: list[int] = field(default_factory=list)
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    structures: list[Any] = field(default_factory=list)
    references: list[Any] = field(default_factory=list)
    inputs: list[Any] = field(default_factory=list)


def _ids(batch: Any) -> list[str]:
    ids = batch[K.ID] if K.ID in batch else [""] * batch.num_graphs
    return [str(i) for i in (ids.tolist() if torch.is_tensor(ids) else ids)]


def _run(predict_fn: Callable[[Any], tuple[torch.Tensor, torch.Tensor]], dataset: Dataset, device: torch.device,
         dtype: torch.dtype, batch_size: int) -> Predictions:
    out = Predictions()
    values: dict[str, list[np.ndarray]] = {}
    for batch in eval_loader(dataset, batch_size):
        batch = prepare_batch(batch, device, dtype)
        pos, cell = predict_fn(batch)
        pos, cell = pos.detach().to(dtype), cell.detach().reshape(-1, 3, 3).to(dtype)
        for name, v in structure_metrics(pos, cell, batch[K.POS_R], batch[K.CELL_R], batch[K.BATCH]).items():
            values.setdefault(name, []).append(v.double().cpu().numpy())
        pbc = batch[K.PBC].reshape(-1, 3) if K.PBC in batch else None
        z, b = batch[K.Z], batch[K.BATCH]
        out.structures += structures_from_batch(pos, cell, z, b, pbc)
        out.references += structures_from_batch(batch[K.POS_R], batch[K.CELL_R].reshape(-1, 3, 3), z, b, pbc)
        out.inputs += structures_from_batch(batch[K.POS_U], batch[K.CELL_U].reshape(-1, 3, 3), z, b, pbc)
        out.ids += _ids(batch)
        out.natoms += torch.bincount(b, minlength=batch.num_graphs).tolist()
    out.metrics = {k: np.concatenate(v) for k, v in values.items()}
    return out


def predict(model: torch.nn.Module, dataset: Dataset, device: torch.device, dtype: torch.dtype = torch.float32,
            batch_size: int = 16) -> Predictions:
    """Last-layer predictions of ``model`` on ``dataset`` with their per-structure metrics."""
    model = model.to(device=device, dtype=dtype).eval()

    def fn(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            out = model(batch)
        return out.final_pos, out.final_cell

    return _run(fn, dataset, device, dtype, batch_size)


def dummy_predictions(dataset: Dataset, batch_size: int = 64) -> Predictions:
    """The Dummy row: the unrelaxed input taken as the prediction."""
    return _run(lambda b: (b[K.POS_U], b[K.CELL_U]), dataset, torch.device("cpu"), torch.float64, batch_size)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(model: torch.nn.Module, batches: Sequence[Any], device: torch.device, warmup: int) -> float:
    """Seconds for one pass over ``batches`` (already on the device), after ``warmup`` passes."""
    with torch.no_grad():
        for i in range(warmup):
            model(batches[i % len(batches)])
        _sync(device)
        t0 = time.perf_counter()
        for b in batches:
            model(b)
        _sync(device)
    return time.perf_counter() - t0


def time_inference(model: torch.nn.Module, dataset: Dataset, device: torch.device, dtype: torch.dtype = torch.float32,
                   num_structures: int = 32, batch_size: int = 16, warmup: int = 3) -> dict[str, float]:
    """Inference time per structure at batch size 1 and batched, after warm-up, synchronised.

    Data loading and the host-to-device copy are excluded: batches are collated and moved first.

    Returns:
        ``{"batch1_ms", "batched_ms", "batch_size", "num_structures"}`` (milliseconds per structure).
    """
    model = model.to(device=device, dtype=dtype).eval()
    n = min(num_structures, len(dataset))
    items = [dataset[i] for i in range(n)]
    singles = [prepare_batch(collate([d]), device, dtype) for d in items]
    groups = [prepare_batch(collate(items[i:i + batch_size]), device, dtype) for i in range(0, n, batch_size)]
    t1 = _timed(model, singles, device, warmup)
    tb = _timed(model, groups, device, max(1, warmup // 2))
    return {"batch1_ms": 1e3 * t1 / n, "batched_ms": 1e3 * tb / n, "batch_size": batch_size, "num_structures": n}


def count_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def subset(dataset: Dataset, limit: int | None) -> Dataset:
    """The first ``limit`` items (all when None or larger than the dataset)."""
    if limit is None or limit >= len(dataset):
        return dataset
    return Subset(dataset, range(int(limit)))
