"""A wall-clock budget for training runs (used to train the shipped pretrained checkpoints).

Add ``e3relax.engine.budget.stop_after_budget`` to a run's ``hooks`` and set the environment
variable ``E3RELAX_TIME_BUDGET_S`` (seconds): after each evaluation, once the run has used its
budget, the trainer stops. ``best.pt`` then holds the best evaluated weights so far.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

__all__ = ["BUDGET_ENV", "stop_after_budget"]

log = logging.getLogger(__name__)

#: environment variable holding the budget in seconds
BUDGET_ENV = "E3RELAX_TIME_BUDGET_S"


def stop_after_budget(trainer: Any, evaluator: Any, context: dict) -> None:
    """Engine hook: terminate ``trainer`` at the first epoch end after the budget is spent.

    Args:
        trainer: the Ignite trainer.
        evaluator: the Ignite evaluator (runs before this handler at each epoch end).
        context: hook context (unused).
    """
    from ignite.engine import Events

    raw = os.environ.get(BUDGET_ENV)
    if not raw:
        log.warning("stop_after_budget: %s is not set; no time budget", BUDGET_ENV)
        return
    budget = float(raw)
    start = time.monotonic()

    @trainer.on(Events.EPOCH_COMPLETED)
    def _check(engine: Any) -> None:
        used = time.monotonic() - start
        if used >= budget:
            log.info("time budget of %.0f s spent (%.0f s) at iteration %d: stopping", budget, used,
                     engine.state.iteration)
            engine.terminate()
