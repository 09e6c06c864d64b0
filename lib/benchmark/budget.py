"""The training budget every model of a comparison gets: optimiser steps, evaluations, wall time.

A :class:`Budget` becomes part of each run's engine config (``schedule.*``); the wall-time limit is
enforced by :func:`wall_clock_hook`, a trainer hook (``hooks:`` in the config). The hook reads the
limit from :data:`WALL_LIMIT_S` (set by :func:`set_wall_limit` in the same process before
``train``), so the engine config stays a plain mapping of known keys.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["Budget", "WALL_LIMIT_S", "RUN_STATE", "set_wall_limit", "wall_clock_hook", "HOOK_PATH"]

log = logging.getLogger(__name__)

#: wall-time limit (seconds) of the next training run in this process; ``inf`` means none
WALL_LIMIT_S: float = math.inf
#: filled by the hook during a run: ``history`` [(iteration, validation coordinate MAE)],
#: ``wall_budget_hit`` (bool), ``iterations`` (optimiser steps taken)
RUN_STATE: dict[str, Any] = {"history": [], "wall_budget_hit": False, "iterations": 0}
#: dotted path of :func:`wall_clock_hook` for the engine config's ``hooks`` list
HOOK_PATH = "e3relax.benchmark.budget.wall_clock_hook"


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
                         "early_stop_patience": None},
            "data": {"batch_size": self.batch_size, "max_val_structures": self.max_val_structures},
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def set_wall_limit(seconds: float | None) -> None:
    """Set the wall-time limit read by :func:`wall_clock_hook` for the next run in this process,
    and clear :data:`RUN_STATE`."""
    global WALL_LIMIT_S
    WALL_LIMIT_S = math.inf if seconds is None else float(seconds)
    RUN_STATE.clear()
    RUN_STATE.update({"history": [], "wall_budget_hit": False, "iterations": 0})


def wall_clock_hook(trainer: Engine, evaluator: Engine, context: dict) -> None:
    """Record the validation history in :data:`RUN_STATE`; stop training once :data:`WALL_LIMIT_S`
    seconds have passed since the run started.

    Before stopping, the handlers of ``EPOCH_COMPLETED`` run once more (validation, best and last
    checkpoints), so the time spent since the last validation is not wasted.
    """
    from e3relax.metrics import MAE_POS

    @evaluator.on(Events.COMPLETED)
    def _record(engine: Engine) -> None:
        RUN_STATE["history"].append((trainer.state.iteration, float(engine.state.metrics[MAE_POS])))

    @trainer.on(Events.COMPLETED)
    def _done(engine: Engine) -> None:
        RUN_STATE["iterations"] = engine.state.iteration

    limit = WALL_LIMIT_S
    if not math.isfinite(limit):
        return
    start: dict[str, float] = {}

    @trainer.on(Events.STARTED)
    def _start(engine: Engine) -> None:
        start["t"] = time.perf_counter()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _check(engine: Engine) -> None:
        if time.perf_counter() - start["t"] < limit:
            return
        log.info("wall-time budget of %.0f s reached at iteration %d; validating and stopping",
                 limit, engine.state.iteration)
        engine.fire_event(Events.EPOCH_COMPLETED)  # terminate() skips the epoch's own handlers
        RUN_STATE["wall_budget_hit"] = True
        engine.terminate()
