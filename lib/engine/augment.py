"""Training-time augmentation: extra inputs made from a pair's own structures, same relaxed target.

Configured as ``data.augment`` (off by default)::

    data:
      augment: {share: 0.5, kind: denoise, strain: 0.05, rattle: 0.1}

``share`` of the training draws replace the pair's input by a generated one:

- ``denoise``: the relaxed structure, strained by a random symmetric strain ``eps`` (entries
  uniform in ``[-strain, strain]``; ``L <- L (I + eps)``, fractional coordinates kept) and
  rattled (Gaussian, ``rattle`` A per Cartesian component): a structure near the minimum, which
  the model should take back to it;
- ``interpolate``: a point ``lambda ~ U(0, 1)`` of the straight path from the unrelaxed to the
  relaxed structure (positions and cell);
- ``both``: either, with equal chance.

The target stays the relaxed structure. The generated pair is built like a converted one
(:func:`e3relax.records.make_record`: rigid rotation removed, graph on the new input with the
dataset's graph settings); one that fails validation (atoms rattled onto each other) falls back to
the pair itself. What each draw gets is a function of the run's seed and the draw's position in
the training stream (:class:`~e3relax.engine.data.StreamBatchSampler` hands both to the dataset),
so a resumed run sees the same inputs.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
from torch.utils.data import Dataset

from e3relax import keys
from e3relax.errors import InputError

__all__ = ["KINDS", "AugmentedPairs", "augmented_input"]

log = logging.getLogger(__name__)

KINDS = ("denoise", "interpolate", "both")


def augmented_input(pos_u: np.ndarray, cell_u: np.ndarray, pos_r: np.ndarray, cell_r: np.ndarray, kind: str,
                    strain: float, rattle: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A generated input ``(pos [N, 3], cell [3, 3])`` for one pair (``kind``: denoise or interpolate)."""
    if kind == "interpolate":
        lam = rng.random()
        return pos_u + lam * (pos_r - pos_u), cell_u + lam * (cell_r - cell_u)
    eps = rng.uniform(-strain, strain, size=(3, 3))
    deform = np.eye(3) + 0.5 * (eps + eps.T)
    frac = pos_r @ np.linalg.inv(cell_r)
    cell = cell_r @ deform
    return frac @ cell + rng.normal(0.0, rattle, size=pos_r.shape), cell


class AugmentedPairs(Dataset):
    """A training set whose draws are, for ``share`` of them, generated inputs (module docstring).

    ``dataset[i]`` is the pair itself; ``dataset[(i, draw)]`` (what the training sampler asks for)
    is generated or not as ``(seed, draw)`` decides. ``weights`` and ``sizes`` of a weighted set
    pass through.

    Args:
        dataset: the labelled training set.
        settings: ``data.augment`` (``share``, ``kind``, ``strain``, ``rattle``).
        graph: graph-builder settings of the dataset (``{"name": ..., **params}``).
        seed: the run's seed.

    Raises:
        InputError: for a share outside [0, 1], an unknown kind or a negative strain or rattle.
    """

    wants_draw = True

    def __init__(self, dataset: Any, settings: Mapping[str, Any], graph: Mapping[str, Any], seed: int) -> None:
        from e3relax.registry import GRAPHS

        self.share = float(settings.get("share", 0.0))
        self.kind = str(settings.get("kind", "denoise"))
        self.strain = float(settings.get("strain", 0.05))
        self.rattle = float(settings.get("rattle", 0.1))
        if not 0.0 <= self.share <= 1.0:
            raise InputError(f"data.augment.share: expected a number in [0, 1], got {self.share}")
        if self.kind not in KINDS:
            raise InputError(f"data.augment.kind: '{self.kind}' unknown; use {', '.join(KINDS)}")
        if self.strain < 0 or self.rattle < 0:
            raise InputError("data.augment.strain and data.augment.rattle must not be negative")
        self.dataset, self.seed = dataset, int(seed)
        self.graph = GRAPHS.build(dict(graph))
        self.generated = self.fallbacks = 0

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def weights(self):
        return getattr(self.dataset, "weights", None)

    @property
    def sizes(self):
        return getattr(self.dataset, "sizes", None)

    def __getitem__(self, key: Any):
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, draw = key
        data = self.dataset[index]
        rng = np.random.default_rng([self.seed, int(draw), 7919])
        if rng.random() >= self.share:
            return data
        kind = self.kind if self.kind != "both" else ("denoise", "interpolate")[int(rng.integers(2))]
        return self._generated(data, kind, rng)

    def _generated(self, data: Any, kind: str, rng: np.random.Generator):
        from ase import Atoms

        from e3relax.records import make_record, record_to_data
        from e3relax.structures import PairValidationError

        arr = {k: data[k].detach().double().numpy() for k in (keys.POS_U, keys.CELL_U, keys.POS_R, keys.CELL_R)}
        pos, cell = augmented_input(arr[keys.POS_U], arr[keys.CELL_U][0], arr[keys.POS_R], arr[keys.CELL_R][0],
                                    kind, self.strain, self.rattle, rng)
        z, pbc = data[keys.Z].numpy(), data[keys.PBC][0].numpy()
        sid = f"{data[keys.ID]}+{kind}"
        try:
            record, _ = make_record(Atoms(numbers=z, positions=pos, cell=cell, pbc=pbc),
                                    Atoms(numbers=z, positions=arr[keys.POS_R], cell=arr[keys.CELL_R][0], pbc=pbc),
                                    sid, self.graph)
        except (PairValidationError, ValueError) as exc:
            self.fallbacks += 1
            log.debug("augmentation of %s fell back to the pair: %s", data[keys.ID], exc)
            return data
        self.generated += 1
        out = record_to_data(record, dtype=data[keys.POS_U].dtype)
        return _same_fields(out, data)


def _same_fields(out: Any, data: Any):
    """Give a generated record exactly the fields of the pair (so batches collate)."""
    for k in set(data.keys()) - set(out.keys()):
        out[k] = data[k]
    for k in set(out.keys()) - set(data.keys()):
        del out[k]
    return out


def wrap_training_set(dataset: Any, config: Mapping[str, Any]) -> Any:
    """The training set with ``data.augment`` applied (unchanged when its share is 0)."""
    from e3relax.model_base import dataset_graph
    from e3relax.predict.pretrained import DEFAULT_GRAPH

    settings = config["data"].get("augment") or {}
    if not float(settings.get("share", 0.0) or 0.0):
        return dataset
    graph = dataset_graph(dataset) or DEFAULT_GRAPH
    log.info("augmentation: %.0f%% of the training draws are generated inputs (%s; strain %g, rattle %g A)",
             100 * float(settings["share"]), settings.get("kind", "denoise"), float(settings.get("strain", 0.05)),
             float(settings.get("rattle", 0.1)))
    return AugmentedPairs(dataset, settings, graph, int(config["seed"]))
