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

    It also counts the wall-clock seconds of the run, across resumes (:meth:`wall_used`), which a
    run's own process alone cannot tell.
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
        self._wall_before: float | None = 0.0  # wall seconds of earlier processes (None: unknown)
        self._wall_start: float | None = None

    def used(self) -> float:
        """Seconds of the budget used so far (this process and any run it resumed)."""
        return self._before + (CLOCKS[self.clock]() - self._start if self._start is not None else 0.0)

    def wall_used(self) -> float | None:
        """Wall-clock seconds of the run so far, this process and any it resumed; None when it
        resumed a checkpoint written before this was saved."""
        if self._wall_before is None:
            return None
        return self._wall_before + (CLOCKS["wall"]() - self._wall_start if self._wall_start is not None else 0.0)

    @staticmethod
    def summary(budget: "TimeBudget | None") -> dict[str, Any]:
        """A run summary's budget keys: whether it stopped the run, and the seconds used (None: no budget)."""
        return {"time_limit_hit": bool(budget is not None and budget.hit),
                "time_used_s": budget.used() if budget is not None else None,
                "wall_used_s": budget.wall_used() if budget is not None else None}

    def attach(self, trainer: Engine) -> "TimeBudget":
        trainer.add_event_handler(Events.STARTED, self._started)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._check)
        return self

    def _started(self, engine: Engine) -> None:
        self._start = CLOCKS[self.clock]()
        self._wall_start = CLOCKS["wall"]()

    def _check(self, engine: Engine) -> None:
        if self.hit or self.used() < self.seconds:
            return
        log.info("time budget of %.0f %s-seconds spent at iteration %d; validating and stopping",
                 self.seconds, self.clock, engine.state.iteration)
        self.hit = True
        engine.fire_event(Events.EPOCH_COMPLETED)  # terminate() skips the epoch's own handlers
        engine.terminate()

    def state_dict(self) -> dict[str, Any]:
        return {"used": self.used(), "hit": self.hit, "clock": self.clock, "wall_used": self.wall_used()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("clock", self.clock) != self.clock:
            raise ValueError(f"schedule.time_clock: the run was started with '{state['clock']}', not '{self.clock}'")
        self._before, self.hit = float(state["used"]), bool(state["hit"])
        wall = state.get("wall_used")
        self._wall_before = float(wall) if wall is not None else None


class ValidationHistory:
    """The validation metrics after every evaluation, with the iteration and the CPU-seconds the
    training processes had used by then; saved with the checkpoints, so a resumed run keeps its
    whole history (the comparison's plateau rule and the time-to-accuracy curves read it).

    Attributes:
        records: one dict per evaluation: ``iteration``, ``cpu_s`` and each metric of :data:`METRICS`.
    """

    #: metrics kept per evaluation
    METRICS = ("mae_pos", "shape_dev", "mae_vol", "pooled_mae_pos")

    def __init__(self, metric: str = "mae_pos") -> None:
        self.metric = metric
        self.records: list[dict[str, float]] = []
        self._before = 0.0  # CPU-seconds used by the earlier processes of a resumed run
        self._start = time.process_time()

    @property
    def history(self) -> list[tuple[int, float]]:
        """``(iteration, value of the selection metric)`` per evaluation."""
        return [(int(r["iteration"]), float(r[self.metric])) for r in self.records]

    def cpu_used(self) -> float:
        return self._before + time.process_time() - self._start

    def attach(self, trainer: Engine, evaluator: Engine) -> "ValidationHistory":
        @trainer.on(Events.STARTED)
        def _started(engine: Engine) -> None:
            self._start = time.process_time()

        @evaluator.on(Events.COMPLETED)
        def _record(engine: Engine) -> None:
            m = engine.state.metrics
            rec = {"iteration": float(trainer.state.iteration), "cpu_s": self.cpu_used()}
            rec.update({k: float(m[k]) for k in self.METRICS if k in m})
            self.records.append(rec)
        return self

    def state_dict(self) -> dict[str, Any]:
        keys = sorted({k for r in self.records for k in r})
        return {"cpu_used": self.cpu_used(), "columns": {k: [r.get(k, float("nan")) for r in self.records]
                                                          for k in keys}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        cols = state["columns"]
        n = len(next(iter(cols.values()))) if cols else 0
        self.records = [{k: float(v[i]) for k, v in cols.items()} for i in range(n)]
        self._before, self._start = float(state["cpu_used"]), time.process_time()
