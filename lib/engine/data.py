"""Datasets and data loaders for the engines: a small dataset factory, a resumable seeded batch
sampler (data order is a pure function of seed and step, so ``--resume`` replays it exactly and
each process of a distributed run takes its own slice), the PyG collate function, and batch
preparation (device and float precision).
"""
from __future__ import annotations

import importlib
import logging
import math
import signal
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch.utils.data import ConcatDataset, Dataset, Sampler, Subset

from e3relax import keys
from e3relax.errors import InputError, MissingPathError
from e3relax.records import collate  # PyG Batch.from_data_list with field checks

__all__ = ["build_dataset", "element_counts", "training_elements", "training_frame", "training_info", "skipped_records", "collate",
           "StreamBatchSampler", "WeightedConcat", "epoch_counts", "train_loader", "eval_loader", "prepare_batch"]

log = logging.getLogger(__name__)


def _lmdb(path: str | Path, dtype: torch.dtype, skip_bad: bool = False) -> Dataset:
    from e3relax.datasets.reader import LmdbDataset

    return LmdbDataset(path, dtype=dtype, skip_bad=skip_bad)


def element_counts(dataset: Any) -> dict[int, list[int]]:
    """``{Z: [atoms, structures]}`` over a training set: from the LMDB metadata where the converter
    recorded it, else by reading every record once (in-memory data, older databases)."""
    if isinstance(dataset, ConcatDataset):
        out: dict[int, list[int]] = {}
        for part in dataset.datasets:
            for z, (atoms, structures) in element_counts(part).items():
                tot = out.setdefault(z, [0, 0])
                tot[0] += atoms
                tot[1] += structures
        return dict(sorted(out.items()))
    recorded = getattr(dataset, "elements", None)
    if recorded is not None and not getattr(dataset, "skipped", None):
        return {int(z): list(v) for z, v in recorded.items()}
    out = {}
    for k in range(len(dataset)):
        z, n = torch.unique(dataset[k][keys.Z], return_counts=True)
        for zi, ni in zip(z.tolist(), n.tolist()):
            tot = out.setdefault(int(zi), [0, 0])
            tot[0] += int(ni)
            tot[1] += 1
    return dict(sorted(out.items()))


def training_frame(dataset: Any) -> str:
    """The frame a training set's pairs are in: ``"canonical"`` when every part was converted with
    ``--canonical-frame`` (its LMDB metadata records ``source.canonical_frame``), else ``"dataset"``
    (the datasets' own cells). Predictions default to this frame."""
    if isinstance(dataset, ConcatDataset):
        frames = {training_frame(part) for part in dataset.datasets}
        return "canonical" if frames == {"canonical"} else "dataset"
    if isinstance(dataset, Subset):
        return training_frame(dataset.dataset)
    source = (getattr(dataset, "metadata", None) or {}).get("source") or {}
    return "canonical" if source.get("canonical_frame") is not None else "dataset"


def training_elements(dataset: Any, init_from: str | Path | None = None) -> dict[int, list[int]]:
    """``{Z: [atoms, structures]}`` a model is trained on: ``dataset``'s, plus, when the run starts
    from another run's weights (``init_from``), what that run recorded."""
    counts = element_counts(dataset)
    if init_from:
        from e3relax.engine.checkpoint import load_checkpoint

        for z, (atoms, structures) in (load_checkpoint(init_from).get("train_elements") or {}).items():
            tot = counts.setdefault(int(z), [0, 0])
            tot[0] += int(atoms)
            tot[1] += int(structures)
    log.info("training elements (atoms): %s", ", ".join(f"Z={z} {v[0]}" for z, v in sorted(counts.items())))
    return dict(sorted(counts.items()))


def training_info(dataset: Any, init_from: str | Path | None = None) -> dict[str, Any]:
    """What a run's checkpoints record of its training data: the elements seen
    (:func:`training_elements`) and the frame of the pairs (:func:`training_frame`)."""
    return {"train_elements": training_elements(dataset, init_from), "train_frame": training_frame(dataset)}


def skipped_records(dataset: Any) -> int:
    """How many bad records a dataset from :func:`build_dataset` left out (``skip_bad=True``)."""
    if isinstance(dataset, ConcatDataset):
        return sum(skipped_records(d) for d in dataset.datasets)
    return len(getattr(dataset, "skipped", []) or [])


def build_dataset(spec: Any, dtype: torch.dtype = torch.float32, skip_bad: bool = False,
                  what: str = "dataset") -> Dataset | None:
    """Turn a data spec into a torch ``Dataset`` of PyG ``Data``.

    Args:
        spec: ``None``; a Dataset or list of Data (returned unchanged); an LMDB path; a list of
            LMDB paths (concatenated); a list of ``{path, weight}`` (and paths, weight 1) trained on
            together, each with its share of the draws (:class:`WeightedConcat`); or ``{"name": "pkg.module.Class", **kwargs}`` for a user's
            own dataset class.
        dtype: floating precision LMDB records are read in (the run's dtype).
        skip_bad: check every LMDB record at once and leave out (and count) those that fail
            validation; otherwise a bad record raises when it is read.
        what: the config key or option the spec came from, for messages (``data.train``).

    Raises:
        InputError / MissingPathError: naming the spec when it cannot be turned into a dataset.
    """
    if spec is None or isinstance(spec, Dataset):
        return spec
    if isinstance(spec, (str, Path)):
        if not Path(spec).exists():
            raise MissingPathError(f"{what}: dataset path {spec} does not exist")
        return _lmdb(spec, dtype, skip_bad)
    if isinstance(spec, Mapping) and "path" in spec:
        return WeightedConcat([build_dataset(spec["path"], dtype, skip_bad, what)], [_weight(spec, what)])
    if isinstance(spec, Mapping):
        name = spec.get("name")
        if not isinstance(name, str) or "." not in name:
            raise InputError(f"{what}: dataset spec {dict(spec)!r} needs 'name' as a dotted path pkg.module.Class")
        module, _, attr = name.rpartition(".")
        cls = getattr(importlib.import_module(module), attr)
        return cls(**{k: v for k, v in spec.items() if k != "name"})
    if isinstance(spec, Sequence):
        if spec and all(isinstance(s, (str, Path)) for s in spec):
            return ConcatDataset([build_dataset(s, dtype, skip_bad, what) for s in spec])
        if spec and all(isinstance(s, (str, Path)) or (isinstance(s, Mapping) and "path" in s) for s in spec):
            parts = [s if isinstance(s, Mapping) else {"path": s} for s in spec]
            return WeightedConcat([build_dataset(p["path"], dtype, skip_bad, f"{what}[{k}]") for k, p in enumerate(parts)],
                                  [_weight(p, f"{what}[{k}]") for k, p in enumerate(parts)])
        return list(spec)  # in-memory list of Data
    raise InputError(f"{what}: cannot build a dataset from {spec!r}: give an LMDB path, a list of paths or a dataset")


def _weight(part: Mapping[str, Any], what: str) -> float:
    unknown = sorted(set(part) - {"path", "weight"})
    if unknown:
        raise InputError(f"{what}: unknown key(s) {', '.join(unknown)}; a weighted dataset is {{path: ..., weight: ...}}")
    try:
        w = float(part.get("weight", 1.0))
    except (TypeError, ValueError):
        w = -1.0
    if not (w > 0 and math.isfinite(w)):
        raise InputError(f"{what}: weight must be a positive number, got {part.get('weight')!r}")
    return w


class WeightedConcat(ConcatDataset):
    """Several datasets trained on together, each drawn with its share ``weight / sum(weights)`` of
    the training stream (whatever its size; :class:`StreamBatchSampler`). Configured as
    ``data.train: [{path: a.lmdb, weight: 1.0}, {path: b.lmdb, weight: 0.5}]``.

    Attributes:
        weights: one positive number per dataset.
    """

    def __init__(self, datasets: Sequence[Dataset], weights: Sequence[float]) -> None:
        super().__init__(datasets)
        if len(weights) != len(self.datasets):
            raise ValueError(f"WeightedConcat: {len(self.datasets)} datasets, {len(weights)} weights")
        self.weights = [float(w) for w in weights]

    @property
    def sizes(self) -> list[int]:
        return [len(d) for d in self.datasets]


def epoch_counts(sizes: Sequence[int], weights: Sequence[float]) -> list[int]:
    """Draws per dataset in one data epoch of ``sum(sizes)`` draws, in proportion to ``weights``
    (largest remainders, so they add up exactly; an empty dataset gets none)."""
    total = sum(sizes)
    w = [wt if n > 0 else 0.0 for n, wt in zip(sizes, weights)]
    if total < 1 or sum(w) <= 0:
        raise ValueError("StreamBatchSampler: the training dataset is empty")
    share = [total * wt / sum(w) for wt in w]
    counts = [int(math.floor(x)) for x in share]
    for k in sorted(range(len(w)), key=lambda k: counts[k] - share[k])[:total - sum(counts)]:
        counts[k] += 1
    return counts


class StreamBatchSampler(Sampler):
    """An endless, seeded stream of batches, resumable at any step and split across processes.

    Data epoch ``e`` visits the dataset in the order ``randperm(n)`` drawn from a generator seeded
    with ``seed + e``; the stream concatenates these epochs. Global batch ``k`` holds stream
    positions ``[k G, (k + 1) G)`` with ``G = batch_size * world_size``; process ``rank`` takes the
    ``rank``-th block of ``batch_size``. Batch ``k`` therefore depends only on ``(seed, k)``: set
    :attr:`start_batch` to the trainer's iteration before iterating and a resumed run continues the
    same order.

    Args:
        num_samples: dataset size n.
        batch_size: structures per batch on this process.
        seed: seeds every epoch's permutation.
        rank, world_size: this process and the number of processes.
        shuffle: permute each epoch (False: 0..n-1 repeatedly).
        sizes, weights: for datasets concatenated in this order (:class:`WeightedConcat`): a data
            epoch then holds :func:`epoch_counts` draws from each, taken in turn from that
            dataset's own endless stream of seeded permutations (so its records are drawn equally
            often, to within one), shuffled together with ``seed + e``; still a function of
            ``(seed, k)`` only.
        with_draw: yield ``(index, stream position)`` pairs instead of indices, for a dataset that
            varies a record by draw (:class:`~e3relax.engine.augment.AugmentedPairs`).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True, sizes: Sequence[int] | None = None,
                 weights: Sequence[float] | None = None, with_draw: bool = False) -> None:
        if num_samples < 1:
            raise ValueError("StreamBatchSampler: the training dataset is empty")
        if (sizes is None) != (weights is None) or (sizes is not None and sum(sizes) != num_samples):
            raise ValueError("StreamBatchSampler: give sizes and weights together, sizes adding up to num_samples")
        self.with_draw = bool(with_draw)
        self.sizes = None if sizes is None else [int(n) for n in sizes]
        self.counts = None if sizes is None else epoch_counts(self.sizes, weights)
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.start_batch = 0
        self._cache: tuple[int, torch.Tensor] | None = None

    def _part_stream(self, part: int, start: int, count: int) -> torch.Tensor:
        """Positions ``[start, start + count)`` of dataset ``part``'s stream of permutations."""
        n, out = self.sizes[part], []
        for cycle in range(start // n, (start + count - 1) // n + 1):
            gen = torch.Generator().manual_seed(self.seed + 1_000_003 * (part + 1) + cycle)
            perm = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
            lo, hi = max(start - cycle * n, 0), min(start + count - cycle * n, n)
            out.append(perm[lo:hi])
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

    def _weighted_epoch(self, epoch: int) -> torch.Tensor:
        offsets = [0]
        for n in self.sizes[:-1]:
            offsets.append(offsets[-1] + n)
        draws = torch.cat([off + self._part_stream(d, epoch * c, c)
                           for d, (off, c) in enumerate(zip(offsets, self.counts)) if c > 0])
        if not self.shuffle:
            return draws
        return draws[torch.randperm(len(draws), generator=torch.Generator().manual_seed(self.seed + epoch))]

    def _perm(self, epoch: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != epoch:
            if self.counts is not None:
                perm = self._weighted_epoch(epoch)
            elif self.shuffle:
                gen = torch.Generator().manual_seed(self.seed + epoch)
                perm = torch.randperm(self.num_samples, generator=gen)
            else:
                perm = torch.arange(self.num_samples)
            self._cache = (epoch, perm)
        return self._cache[1]

    def batch(self, k: int) -> list[int]:
        """Dataset indices of global batch ``k`` on this process."""
        start = (k * self.world_size + self.rank) * self.batch_size
        out = []
        for pos in range(start, start + self.batch_size):
            index = int(self._perm(pos // self.num_samples)[pos % self.num_samples])
            out.append((index, pos) if self.with_draw else index)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start_batch
        while True:
            yield self.batch(k)
            k += 1


def _auto_dataloader(dataset: Dataset, **kwargs: Any):
    import ignite.distributed as idist

    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.INFO))  # ignite logs every loader's kwargs at INFO
    try:
        with warnings.catch_warnings():  # our batch sampler is distributed-aware by construction
            warnings.filterwarnings("ignore", message="Found batch_sampler in provided kwargs")
            return idist.auto_dataloader(dataset, **kwargs)
    finally:
        logging.disable(previous)


def _ignore_interrupts(_worker_id: int) -> None:
    """Loader workers leave Ctrl-C to the main process, which saves and stops the run cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def train_loader(dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0):
    """Endless training loader over ``dataset`` (``batch_size`` is global, split across processes).

    Returns:
        (loader, sampler): set ``sampler.start_batch`` before the loader is iterated to resume.
    """
    import ignite.distributed as idist

    world, rank = idist.get_world_size(), idist.get_rank()
    per_rank = max(1, batch_size // world)
    weights = getattr(dataset, "weights", None)
    sampler = StreamBatchSampler(len(dataset), per_rank, seed=seed, rank=rank, world_size=world,
                                 sizes=dataset.sizes if weights is not None else None, weights=weights,
                                 with_draw=bool(getattr(dataset, "wants_draw", False)))
    # a private generator: creating the iterator (worker seeds) must not consume the global RNG
    loader = _auto_dataloader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                              persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed),
                              worker_init_fn=_ignore_interrupts if num_workers > 0 else None)
    return loader, sampler


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, max_structures: int | None = None):
    """Ordered evaluation loader (each process gets its share in a distributed run)."""
    if max_structures is not None and max_structures < len(dataset):
        dataset = Subset(dataset, range(int(max_structures)))
    return _auto_dataloader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                            num_workers=num_workers, drop_last=False, generator=torch.Generator().manual_seed(0))


def prepare_batch(batch: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Move a batch to ``device`` and cast its floating-point fields to ``dtype``."""
    batch = batch.to(device, non_blocking=True)
    for key in batch.keys():
        value = batch[key]
        if torch.is_tensor(value) and value.is_floating_point() and value.dtype != dtype:
            batch[key] = value.to(dtype)
    return batch
