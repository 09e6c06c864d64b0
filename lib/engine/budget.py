"""A training run's time budget and validation history: the one engine handler for both.

Set ``schedule.time_limit_s`` (seconds) and ``schedule.time_clock`` in a run's config:

- ``cpu`` (default): CPU seconds of the training process (all its threads), so a loaded machine
  does not change how much training a run gets;
- ``wall``: wall-clock seconds.

Once the budget is spent, the handler runs the epoch-end handlers once more (validation, best and
last checkpoints), so nothing since the last validation is lost, and stops the trainer. The time
used is saved in every checkpoint: a resumed run continues the same budget.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from ignite.engine import Engine, Events

__all__ = ["CLOCKS", "TimeBudget", "ValidationHistory"]

log = logging.getLogger(__name__)

#: clock name -> seconds counter
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


class TimeBudget:
    """Stop the trainer after ``seconds`` of ``clock`` time (checked after every iteration).

    Attributes:
        hit: whether the budget stopped the run.
    """

    def __init__(self, seconds: float, clock: str = "cpu") -> None:
        if clock not in CLOCKS:
            raise ValueError(f"schedule.time_clock: '{clock}' is not a clock; use one of {sorted(CLOCKS)}")
        if not seconds > 0:
            raise ValueError(f"schedule.time_limit_s: must be positive, got {seconds}")
        self.seconds, self.clock = float(seconds), clock
        self.hit = False
        self._before = 0.0  # used by earlier processes of a resumed run
        self._start: float | None = None

    def used(self) -> float:
        """Seconds of the budget used so far (this process and any run it resumed)."""
        return self._before + (CLOCKS[self.clock]() - self._start if self._start is not None else 0.0)

    def attach(self, trainer: Engine) -> "TimeBudget":
        trainer.add_event_handler(Events.STARTED, self._started)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._check)
        return self

    def _started(self, engine: Engine) -> None:
        self._start = CLOCKS[self.clock]()

    def _check(self, engine: Engine) -> None:
        if self.hit or self.used() < self.seconds:
            return
        log.info("time budget of %.0f %s-seconds spent at iteration %d; validating and stopping",
                 self.seconds, self.clock, engine.state.iteration)
        self.hit = True
        engine.fire_event(Events.EPOCH_COMPLETED)  # terminate() skips the epoch's own handlers
        engine.terminate()

    def state_dict(self) -> dict[str, Any]:
        return {"used": self.used(), "hit": self.hit, "clock": self.clock}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("clock", self.clock) != self.clock:
            raise ValueError(f"schedule.time_clock: the run was started with '{state['clock']}', not '{self.clock}'")
        self._before, self.hit = float(state["used"]), bool(state["hit"])


class ValidationHistory:
    """``(iteration, validation coordinate MAE)`` after every evaluation; saved with the checkpoints,
    so a resumed run keeps its whole history (used by the plateau rule of the comparison)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.history: list[tuple[int, float]] = []

    def attach(self, trainer: Engine, evaluator: Engine) -> "ValidationHistory":
        @evaluator.on(Events.COMPLETED)
        def _record(engine: Engine) -> None:
            self.history.append((int(trainer.state.iteration), float(engine.state.metrics[self.metric])))
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"iterations": [h[0] for h in self.history], "values": [h[1] for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [(int(i), float(v)) for i, v in zip(state["iterations"], state["values"])]
