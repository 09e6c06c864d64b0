"""The training budget every model of a comparison gets: optimiser steps, evaluations, time.

A :class:`Budget` becomes part of each run's engine config (``schedule.*``); the time limit is the
engine's own :class:`~e3relax.engine.budget.TimeBudget` (``schedule.time_limit_s``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Budget"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """Identical for every model of a comparison.

    Attributes:
        steps: optimiser steps per model (upper bound).
        eval_every: steps between validation passes (one "epoch" of the engine); the best
            validation checkpoint is the one tested.
        wall_s: wall-clock seconds per model (None: no time limit); a run that hits it is
            validated once more and stopped.
        batch_size: structures per optimiser step.
        max_val_structures: validate on the first K validation structures only (None: all).
    """

    steps: int = 300
    eval_every: int = 50
    wall_s: float | None = None
    batch_size: int = 16
    max_val_structures: int | None = 200

    def __post_init__(self) -> None:
        if self.steps < 1 or self.eval_every < 1 or self.batch_size < 1:
            raise ValueError(f"budget: steps, eval_every and batch_size must be positive, got {self}")
        if self.wall_s is not None and self.wall_s <= 0:
            raise ValueError(f"budget: wall_s must be positive, got {self.wall_s}")

    def engine_config(self) -> dict[str, Any]:
        """The ``schedule``/``data`` entries of an engine config implementing this budget."""
        every = min(self.eval_every, self.steps)
        return {
            "schedule": {"epoch_length": every, "max_epochs": max(1, math.ceil(self.steps / every)),
                         "early_stop_patience": None, "time_limit_s": self.wall_s, "time_clock": "wall"},
            "data": {"batch_size": self.batch_size, "max_val_structures": self.max_val_structures},
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
