"""The training budget every model of a comparison gets: optimiser steps, evaluations, time.

A :class:`Budget` becomes part of each run's engine config (``schedule.*``); the time limit is the
engine's own :class:`~e3relax.engine.budget.TimeBudget` (``schedule.time_limit_s``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

from e3relax.engine.handlers import LRSchedule

__all__ = ["Budget"]

log = logging.getLogger(__name__)

#: the learning-rate schedules a comparison may impose on every model: the engine's
LR_SCHEDULES = LRSchedule.KINDS


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
        cpu_s: CPU-seconds of the run's own process per model (None: none); counted on the CPU
            clock, so a loaded machine does not change it. Takes the place of ``wall_s``.
        patience: stop a run after this many validations without improvement (early stopping at
            the validation plateau; None: train to the step or time limit).
        lr_schedule: one learning-rate schedule for every model (``cosine``: decay over the cap,
            as the toolkit's CPU recipe does; ``plateau``: x0.8 after validations without
            improvement), each model keeping its own peak rate and warmup; None: each model's
            config decides (the CPU recipe's cosine for E3Relax, the engine's plateau decay for
            the baselines).
    """

    steps: int = 300
    eval_every: int = 50
    wall_s: float | None = None
    batch_size: int = 16
    max_val_structures: int | None = 200
    cpu_s: float | None = None
    patience: int | None = None
    lr_schedule: str | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.eval_every < 1 or self.batch_size < 1:
            raise ValueError(f"budget: steps, eval_every and batch_size must be positive, got {self}")
        for name in ("wall_s", "cpu_s", "patience"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"budget: {name} must be positive, got {value}")
        if self.wall_s is not None and self.cpu_s is not None:
            raise ValueError("budget: give a wall-clock or a CPU-time limit, not both")
        if self.lr_schedule not in (None, *LR_SCHEDULES):
            raise ValueError(f"budget: lr_schedule must be one of {', '.join(sorted(LR_SCHEDULES))}, "
                             f"got {self.lr_schedule!r}")

    def engine_config(self) -> dict[str, Any]:
        """The ``schedule``/``data`` entries of an engine config implementing this budget."""
        every = min(self.eval_every, self.steps)
        schedule = {"epoch_length": every, "max_epochs": max(1, math.ceil(self.steps / every)),
                    "early_stop_patience": self.patience,
                    "time_limit_s": self.cpu_s if self.cpu_s is not None else self.wall_s,
                    "time_clock": "cpu" if self.cpu_s is not None else "wall"}
        if self.lr_schedule:
            schedule["lr_schedule"] = self.lr_schedule
        return {"schedule": schedule,
                "data": {"batch_size": self.batch_size, "max_val_structures": self.max_val_structures}}

    def describe(self) -> str:
        """One line: the limits of this budget."""
        parts = [f"at most {self.steps:,} steps" if self.steps < 10**9 else "no step limit"]
        if self.cpu_s:
            parts.append(f"{self.cpu_s / 3600:.2f} CPU-hours" if self.cpu_s >= 3600 else f"{self.cpu_s:.0f} CPU-s")
        if self.wall_s:
            parts.append(f"{self.wall_s:.0f} s of wall time")
        if self.patience:
            parts.append(f"early stop after {self.patience} validations without improvement")
        if self.lr_schedule:
            parts.append(f"{self.lr_schedule} learning-rate schedule for every model")
        return ", ".join(parts) + f", batch {self.batch_size}, validation every {self.eval_every} steps"

    def as_dict(self) -> dict[str, Any]:
        """The fields; ``lr_schedule`` only when set, so records written before it existed still
        describe the same budget."""
        out = asdict(self)
        if out["lr_schedule"] is None:
            del out["lr_schedule"]
        return out
