"""Test-set predictions of a trained model, per-structure metrics, and inference timing.

Per-structure metrics are those of :func:`e3relax.metrics.structure_metrics` (the paper's
coordinate MAE, shape deviation and volume MAE, plus lattice-parameter errors), for the model and
for the Dummy prediction (the unrelaxed input). Structures are returned as ``ase.Atoms`` so that
StructureMatcher, spglib and CHGNet can use them.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset, Subset

from e3relax.engine.data import collate, prepare_batch
from e3relax.engine.evaluation import EvalTable, evaluate
from e3relax.predict.prepare import FrameSettings

__all__ = ["Predictions", "predict", "dummy_predictions", "time_inference", "count_parameters", "subset"]

log = logging.getLogger(__name__)


#: per-structure results of a model on a dataset (one evaluation path for the whole toolkit)
Predictions = EvalTable


def predict(model: torch.nn.Module, dataset: Dataset, device: torch.device, dtype: torch.dtype = torch.float32,
            batch_size: int = 16, frames: FrameSettings | None = None) -> Predictions:
    """Last-layer predictions of ``model`` on ``dataset`` with their per-structure metrics and structures.

    The model runs inside a :class:`~e3relax.predict.Relaxer` (graphs built with the dataset's recorded
    graph settings), so the comparison scores what ``e3relax predict`` returns: by default in the
    canonical frame and projected onto each input's space group; ``frames`` says otherwise
    (``FrameSettings(symmetry=False, canonical=False)``: the model's raw output).
    """
    from e3relax.model_base import dataset_graph
    from e3relax.predict import Relaxer
    from e3relax.predict.pretrained import DEFAULT_GRAPH

    frames = frames or FrameSettings()
    model = model.to(device=device, dtype=dtype).eval()
    relaxer = Relaxer([model], dataset_graph(dataset) or DEFAULT_GRAPH, device=device, dtype=dtype,
                      symmetry=frames.symmetry, canonical=frames.canonical, symprec=frames.symprec)
    return evaluate(relaxer, dataset, batch_size=batch_size, device=device, dtype=dtype, keep_structures=True,
                    progress=None)


def dummy_predictions(dataset: Dataset, batch_size: int = 64) -> Predictions:
    """The Dummy row: the unrelaxed input taken as the prediction."""
    from e3relax.registry import MODELS

    return evaluate(MODELS.build({"name": "dummy"}), dataset, batch_size=batch_size, device="cpu",
                    dtype=torch.float64, keep_structures=True, progress=None)


def prior_predictions(dataset: Dataset, train: Dataset, batch_size: int = 64) -> Predictions:
    """The prior row: the input scaled isotropically to the per-element volumes fitted on ``train``
    (the ``volume_prior`` model), the floor a network must beat to have learned more than the volume."""
    from e3relax.priors import fit_priors
    from e3relax.registry import MODELS

    prior = MODELS.build({"name": "volume_prior"})
    fit_priors(prior, train)
    return evaluate(prior.double(), dataset, batch_size=batch_size, device="cpu", dtype=torch.float64,
                    keep_structures=True, progress=None)


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
