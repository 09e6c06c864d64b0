"""Rewinding a diverged run: back to its last good checkpoint, at a lower learning rate.

A run whose loss or gradient stays non-finite for more than ``optim.max_nonfinite_steps`` steps in
a row has weights that overflow on every batch (docs/training.md, "Where the NaN came from").
Skipping more steps cannot help, and resuming at the same rate retraces nearly the same steps. So,
up to ``optim.nonfinite_rewinds`` times, :func:`train_rewinding` rewrites ``last.pt`` with every
learning rate times ``optim.rewind_lr_factor`` and continues from it: the lower rate is kept for the
rest of the run (and in ``config.yaml``, so ``--resume`` keeps it too). The CPU time spent on the
discarded steps stays charged to the run's time budget, so a rewound run gets no extra time.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["rewind_checkpoint", "train_rewinding"]

log = logging.getLogger(__name__)


def rewind_checkpoint(path: str | Path, lr_factor: float, budget_used_s: float | None,
                      stopped_at: int | None = None, skipped_steps: int = 0) -> dict[str, Any]:
    """Rewrite the checkpoint ``path`` in place (atomically): learning rates times ``lr_factor`` (the
    optimiser's groups and the saved ``optim.lr``), and the time budget used set to at least
    ``budget_used_s``. With ``stopped_at`` (the iteration that stopped the run), the run's tally of
    non-finite steps records the rewind and counts at least ``skipped_steps`` (those of the discarded
    steps included). Returns ``{"resumed_from": iteration, "lr": new optim.lr}``."""
    from e3relax.engine.checkpoint import AtomicSaver, load_checkpoint

    path = Path(path)
    ckpt = load_checkpoint(path)
    for group in ckpt["optimizer"]["param_groups"]:
        group["lr"] = float(group["lr"]) * lr_factor
    optim = ckpt["config"]["optim"]
    optim["lr"] = float(optim["lr"]) * lr_factor
    budget = ckpt.get("time_budget")
    if isinstance(budget, dict) and budget_used_s is not None:
        budget["used"] = max(float(budget["used"]), float(budget_used_s))
    info = {"resumed_from": int(ckpt["trainer"]["iteration"]), "lr": optim["lr"]}
    if stopped_at is not None:
        tally = ckpt.setdefault("nonfinite_steps", {"total": 0, "rewinds": []})
        tally["total"] = max(int(tally.get("total", 0)), int(skipped_steps))
        tally["rewinds"] = list(tally.get("rewinds", [])) + [{"iteration": int(stopped_at), **info}]
    AtomicSaver(path.parent)(ckpt, path.name)
    return info


def train_rewinding(local_rank: int, config: Mapping[str, Any], resume: bool = False,
                    datasets: Mapping[str, Any] | None = None,
                    training: Callable[..., dict] | None = None) -> dict[str, Any]:
    """Call ``training(local_rank, config, resume, datasets)`` (default:
    :func:`e3relax.engine.trainer.training`); after a non-finite stop, rewind (see the module) and
    call it again with ``resume=True``, at most ``optim.nonfinite_rewinds`` times in the whole run
    (a resumed run counts the rewinds recorded in its ``last.pt``).

    Returns:
        the last call's summary, with ``rewinds``: one ``{"iteration", "resumed_from", "lr"}`` per
        rewind of the run, in this process or an earlier one that it resumes (the iteration that
        stopped, the checkpoint's iteration, the new ``optim.lr``).
    """
    import ignite.distributed as idist

    if training is None:
        from e3relax.engine.trainer import training
    config = copy.deepcopy(dict(config))
    optim = config["optim"]
    limit, factor = int(optim["nonfinite_rewinds"]), float(optim["rewind_lr_factor"])
    last = Path(config["run_dir"]) / "checkpoints" / "last.pt"
    rewinds: list[dict[str, Any]] = []
    while True:
        summary = training(local_rank, config, resume, datasets)
        done = summary.get("rewinds") or rewinds  # the run's rewinds, earlier processes' included
        stop = summary.get("stopped_nonfinite")
        if not stop or len(done) >= limit or not last.exists():
            break
        info: dict[str, Any] = {"iteration": int(stop["iteration"])}
        if idist.get_rank() == 0:
            info.update(rewind_checkpoint(last, factor, summary.get("time_used_s"), info["iteration"],
                                          int(summary.get("skipped_nonfinite_steps") or 0)))
            log.warning("iteration %d: rewinding to last.pt (iteration %d) with optim.lr %.3g (x%g; rewind %d of %d)",
                        info["iteration"], info["resumed_from"], info["lr"], factor, len(done) + 1, limit)
        idist.barrier()  # every rank resumes from the rewritten checkpoint
        optim["lr"] = float(optim["lr"]) * factor
        info.setdefault("lr", optim["lr"])
        rewinds.append(info)
        resume = True
    if not summary.get("rewinds"):  # the trainer reports the run's rewinds, earlier processes' included
        summary["rewinds"] = rewinds
    return summary
