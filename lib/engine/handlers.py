"""Ignite handlers wired to the trainer and evaluator: EMA with warmup, plateau LR decay, early
stopping, best and last checkpoints (also every N steps / minutes), skipped non-finite steps, a clean stop on
SIGINT / SIGTERM, step timing (throughput, data-wait share), progress bar.
"""
from __future__ import annotations

import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Mapping

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, EarlyStopping, EMAHandler, global_step_from_engine

from e3relax import keys
from e3relax.engine.checkpoint import FORMAT_VERSION, AtomicSaver, RngState, Value
from e3relax.engine.evaluator import POOLED

__all__ = ["SELECT_METRIC", "attach_ema", "attach_plateau", "attach_early_stopping", "attach_checkpoints",
           "NonFiniteSteps", "load_nonfinite_dump", "LastCheckpoint", "SignalStop", "StepTimer", "selection_score"]

log = logging.getLogger(__name__)

#: the validation metric that drives LR decay, early stopping and the best checkpoint
SELECT_METRIC = POOLED


def selection_score(engine: Engine) -> float:
    """Higher is better: minus the pooled validation coordinate MAE of the EMA model."""
    return -float(engine.state.metrics[SELECT_METRIC])


def attach_ema(trainer: Engine, model: torch.nn.Module, cfg: Mapping[str, Any]) -> EMAHandler:
    """Ignite's ``EMAHandler`` updated every step: ``shadow <- (1 - m_t) shadow + m_t theta``.

    ``m_t = 1 - decay`` without warmup. With warmup ``m_t = max(1 - decay, (o - 1) / (o + t))``
    at iteration t (o = ``warmup_offset``): early on the average spans the last ~t/(o-1) steps
    instead of being dominated by the initial weights. ``m_t`` is a function of the iteration
    only, so a resumed run continues the same schedule.
    """
    momentum = 1.0 - float(cfg["decay"])
    ema = EMAHandler(model, momentum=momentum, handle_buffers="copy")
    if cfg.get("warmup", True):
        offset = float(cfg.get("warmup_offset", 10.0))

        @trainer.on(Events.ITERATION_COMPLETED)
        def _ema_momentum(engine: Engine) -> None:  # registered before the EMA update
            engine.state.ema_momentum = max(momentum, (offset - 1.0) / (offset + engine.state.iteration))

    ema.attach(trainer, name="ema_momentum", warn_if_exists=False)
    return ema


def attach_plateau(evaluator: Engine, optimizer: torch.optim.Optimizer,
                   cfg: Mapping[str, Any]) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """``ReduceLROnPlateau`` stepped after every evaluation on the EMA model's validation coordinate MAE."""
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=float(cfg["plateau_factor"]), patience=int(cfg["plateau_patience"]),
        min_lr=float(cfg["min_lr"]))

    @evaluator.on(Events.COMPLETED)
    def _step(engine: Engine) -> None:
        scheduler.step(float(engine.state.metrics[SELECT_METRIC]))

    return scheduler


class LRSchedule:
    """Learning rate set before every iteration: a linear warmup over ``warmup_steps`` from
    ``lr / warmup_steps``, then (``cosine``) a cosine decay from ``lr`` to ``min_lr`` over the run.

    With ``cosine``, the run's progress is the larger of the fraction of planned steps taken and the
    fraction of the time budget (:class:`~e3relax.engine.budget.TimeBudget`) used, so a run limited
    by CPU time still ends at ``min_lr``. The rate depends only on the iteration and the budget used,
    both restored on resume; the budget's seconds themselves differ between processes, so with a
    time budget two runs of one seed are close but not bit-identical. With ``plateau``
    only the warmup is applied here; ``ReduceLROnPlateau`` takes over after it.
    """

    KINDS = ("plateau", "cosine")

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, lr: float, min_lr: float, warmup_steps: int,
                 total_steps: int, budget: Any = None) -> None:
        if kind not in self.KINDS:
            from e3relax.engine.config import ConfigError

            raise ConfigError(f"schedule.lr_schedule: expected one of {', '.join(self.KINDS)}, got {kind!r}",
                              "schedule.lr_schedule")
        self.optimizer, self.kind, self.lr, self.min_lr = optimizer, kind, float(lr), float(min_lr)
        self.warmup, self.total, self.budget = int(warmup_steps), max(1, int(total_steps)), budget

    def value(self, iteration: int) -> float | None:
        """The rate for 0-based ``iteration``; None when the plateau scheduler owns it."""
        if iteration < self.warmup:
            return self.lr * (iteration + 1) / self.warmup
        if self.kind == "plateau":
            return None
        frac = (iteration - self.warmup) / max(1, self.total - self.warmup)
        if self.budget is not None:
            frac = max(frac, self.budget.used() / self.budget.seconds)
        frac = min(1.0, frac)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * frac))

    def attach(self, trainer: Engine) -> "LRSchedule":
        @trainer.on(Events.ITERATION_STARTED)
        def _set(engine: Engine) -> None:
            lr = self.value(engine.state.iteration - 1)
            if lr is not None:
                for group in self.optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
        return self


def attach_early_stopping(evaluator: Engine, trainer: Engine, patience: int | None) -> EarlyStopping | None:
    """Stop the trainer after ``patience`` evaluations without a better validation coordinate MAE."""
    if not patience:
        return None
    handler = EarlyStopping(patience=int(patience), score_function=selection_score, trainer=trainer)
    evaluator.add_event_handler(Events.COMPLETED, handler)
    return handler


class LastCheckpoint:
    """Writes ``last.pt`` (the full state) at most once per iteration, never with a non-finite loss.

    Attributes:
        saved_iteration: the iteration of the last.pt on disk written by this run (None: none yet).
        path: ``checkpoints/last.pt``.
    """

    def __init__(self, checkpoint: Checkpoint, path: Path) -> None:
        self.checkpoint = checkpoint
        self.path = path
        self.saved_iteration: int | None = None
        self.saved_at = time.monotonic()

    def __call__(self, engine: Engine) -> None:
        if self.saved_iteration == engine.state.iteration:
            return
        out = engine.state.output
        loss = out.get("loss", 0.0) if isinstance(out, Mapping) else 0.0
        if not math.isfinite(loss):  # keep the previous, finite state for --resume
            log.warning("iteration %d: loss is %s; last.pt not overwritten", engine.state.iteration, loss)
            return
        self.checkpoint(engine)
        self.saved_iteration = engine.state.iteration
        self.saved_at = time.monotonic()


def _rank0_flag(flag: bool) -> bool:
    """Rank 0's decision, on every process (a time-based one must not differ between ranks)."""
    if idist.get_world_size() == 1:
        return flag
    return bool(idist.broadcast(torch.tensor(int(flag), device=idist.device()), src=0).item())


def attach_checkpoints(trainer: Engine, evaluator: Engine, run_dir: Path, config: Mapping[str, Any],
                       objects: Mapping[str, Any], every_steps: int | None = None,
                       every_minutes: float | None = None, info: Mapping[str, Any] | None = None
                       ) -> tuple[Checkpoint, dict[str, Any], LastCheckpoint]:
    """Best (by validation coordinate MAE) and last (full state) checkpoints, rank 0, written atomically.

    ``checkpoints/best.pt`` holds the config and the raw and EMA weights of the best evaluation;
    ``checkpoints/last.pt`` holds everything an exact resume needs: model, EMA model, optimizer,
    scheduler, trainer and early-stopping state, the best checkpoint's bookkeeping and every RNG.
    last.pt is written after each evaluation, at the end, every ``every_steps`` iterations and
    after the first iteration that ends ``every_minutes`` of wall-clock time since the last save.

    Args:
        objects: model, ema_model, optimizer, scheduler, trainer, ... (anything with state_dict).
        every_steps: also save last.pt every this many iterations (None: off).
        every_minutes: also save last.pt when this much time passed since it was saved (None: off).
        info: plain values saved under their keys in both (``train_elements``: what the model saw).

    Returns:
        (best checkpointer, the full to_save mapping used for last.pt and for resuming, the last.pt writer).
    """
    saver = AtomicSaver(run_dir / "checkpoints")
    meta = {"format_version": Value(FORMAT_VERSION), "config": Value(dict(config)),
            **{k: Value(v) for k, v in (info or {}).items()}}
    best = Checkpoint({**meta, "model": objects["model"], "ema_model": objects["ema_model"]}, saver,
                      filename_pattern="best.{ext}", score_function=selection_score, score_name="val_coord_mae",
                      n_saved=1, global_step_transform=global_step_from_engine(trainer))
    evaluator.add_event_handler(Events.COMPLETED, best)
    full = {**meta, **objects, "best_checkpointer": best, "rng": RngState()}
    last = LastCheckpoint(Checkpoint(full, AtomicSaver(run_dir / "checkpoints"), filename_pattern="last.{ext}",
                                     n_saved=1), run_dir / "checkpoints" / "last.pt")
    trainer.add_event_handler(Events.EPOCH_COMPLETED | Events.COMPLETED, last)
    if every_steps:
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=int(every_steps)), last)
    if every_minutes:
        seconds = 60.0 * float(every_minutes)

        def _due(engine: Engine, event: int) -> bool:
            return _rank0_flag(time.monotonic() - last.saved_at >= seconds)

        trainer.add_event_handler(Events.ITERATION_COMPLETED(event_filter=_due), last)
    return best, full, last


class SignalStop:
    """On SIGINT or SIGTERM: finish the current step, write last.pt, stop the trainer.

    Attach it after every other handler. While the trainer runs (main thread only) the two signals
    only set a flag; the first iteration or evaluation that completes afterwards saves the full
    state through ``last`` and terminates the run, so ``--resume`` continues bit for bit. A second
    signal while waiting aborts at once (the default behaviour). In a distributed run every process
    stops at the same iteration when any of them got the signal.

    Attributes:
        signum: the signal that stopped the run, or None.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, last: LastCheckpoint) -> None:
        self.last = last
        self.signum: int | None = None
        self._received: int | None = None
        self._previous: dict[int, Any] = {}

    def attach(self, trainer: Engine) -> "SignalStop":
        trainer.add_event_handler(Events.STARTED, self._install)
        trainer.add_event_handler(Events.ITERATION_COMPLETED | Events.EPOCH_COMPLETED, self._check)
        # not on EXCEPTION_RAISED: a handler there would swallow the exception; call close() instead
        trainer.add_event_handler(Events.COMPLETED, self._restore)
        return self

    def close(self) -> None:
        """Put the previous signal handlers back (after the run, however it ended)."""
        self._restore(None)

    def _handler(self, signum: int, frame: Any) -> None:
        if self._received is not None:  # a second signal: give up waiting
            self._restore(None)
            signal.raise_signal(signum)
            return
        self._received = signum
        log.warning("%s received: stopping after this step and saving last.pt (again to abort without saving)",
                    signal.Signals(signum).name)

    def _install(self, engine: Engine) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)

    def _restore(self, engine: Engine | None, *args: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _check(self, engine: Engine) -> None:
        received = self._received or 0
        if idist.get_world_size() > 1:
            received = int(idist.all_reduce(torch.tensor(received, device=idist.device()), op="MAX").item())
        if not received:
            return
        self.signum = received
        self.last(engine)
        engine.terminate()


class NonFiniteSteps:
    """Counts the optimiser steps the trainer skipped because their loss or gradient norm was not
    finite (the weights and optimiser state stay as they were, as a gradient scaler does), logs each
    with the ids of its structures, and stops the run when more than ``limit`` come in a row (0: at
    the first); the last good state is then in ``last.pt``.

    With ``dump_dir`` and ``model``, the first ``keep`` skipped steps of the process also write
    ``nonfinite_<iteration>.pt``: the weights that gave the non-finite value (unchanged, since the
    step was skipped) and the batch, so the failure replays exactly (:func:`load_nonfinite_dump`).

    Saved with ``last.pt`` (:meth:`state_dict`), so that ``total`` and ``rewinds`` cover the whole
    run across resumes and rewinds.

    Attributes:
        total: skipped steps over the run.
        rewinds: one ``{"iteration", "resumed_from", "lr"}`` per rewind of the run
            (:func:`~e3relax.engine.rewind.rewind_checkpoint` records them in ``last.pt``).
        stopped_at: the iteration that stopped this process's run (None: it did not).
        dumps: the files written.
    """

    def __init__(self, limit: int, dump_dir: Path | None = None, model: torch.nn.Module | None = None,
                 keep: int = 3) -> None:
        self.limit, self.total, self.in_a_row = int(limit), 0, 0
        self.rewinds: list[dict[str, Any]] = []
        self.stopped_at: int | None = None
        self.dump_dir, self.model, self.keep = dump_dir, model, int(keep)
        self.dumps: list[Path] = []

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "rewinds": [dict(r) for r in self.rewinds]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.total = int(state.get("total", 0))
        self.rewinds = [dict(r) for r in state.get("rewinds", [])]

    def attach(self, trainer: Engine) -> "NonFiniteSteps":
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self)
        return self

    def _dump(self, iteration: int, batch: Any, ids: list) -> None:
        if self.dump_dir is None or self.model is None or len(self.dumps) >= self.keep:
            return
        model = getattr(self.model, "module", self.model)
        items = [{k: v for k, v in d.to_dict().items() if torch.is_tensor(v)} for d in batch.to_data_list()]
        path = Path(self.dump_dir) / f"nonfinite_{iteration}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"iteration": iteration, "model": model.state_dict(), "items": items,
                    "ids": [str(i) for i in ids]}, path)
        self.dumps.append(path)
        log.warning("iteration %d: weights and batch saved to %s (replay: e3relax.engine.handlers."
                    "load_nonfinite_dump)", iteration, path)

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output
        if not (isinstance(out, Mapping) and out.get("skipped_step")):
            self.in_a_row = 0
            return
        self.total += 1
        self.in_a_row += 1
        batch = engine.state.batch
        ids = batch[keys.ID] if keys.ID in batch else []
        ids = ids.tolist() if torch.is_tensor(ids) else list(ids)
        log.warning("iteration %d: loss %s, gradient norm %s: optimiser step skipped (%d in a row; structures %s)",
                    engine.state.iteration, out.get("loss"), out.get("grad_norm"), self.in_a_row,
                    ", ".join(map(str, ids[:16])) + (" ..." if len(ids) > 16 else ""))
        self._dump(engine.state.iteration, batch, ids)
        if self.in_a_row > self.limit:
            self.stopped_at = engine.state.iteration
            log.error("iteration %d: %d non-finite steps in a row; stopping (last good state in last.pt). "
                      "Lower optim.lr or check these structures.", engine.state.iteration, self.in_a_row)
            engine.terminate()


def load_nonfinite_dump(path: str | Path) -> tuple[dict[str, torch.Tensor], Any, dict[str, Any]]:
    """``(state_dict, batch, info)`` of a ``nonfinite_<iteration>.pt`` file (loaded weights-only):
    load the state into the run's model and call it on the batch to replay the failure."""
    from torch_geometric.data import Batch, Data

    blob = torch.load(path, map_location="cpu", weights_only=True)
    batch = Batch.from_data_list([Data(num_nodes=int(d[keys.Z].numel()), **d) for d in blob["items"]])
    return blob["model"], batch, {"iteration": blob["iteration"], "ids": blob["ids"]}


class StepTimer:
    """Measures, over windows of ``every`` iterations, structures per second and the share of step
    time spent waiting for the data loader; stored as ``trainer.state.throughput`` and
    ``trainer.state.data_wait_share`` (and accumulated over the run in :attr:`totals`, with the
    process CPU time of those steps, all threads: a figure that does not depend on other load).
    """

    def __init__(self, every: int) -> None:
        self.every = max(1, int(every))
        self.totals = {"data": 0.0, "step": 0.0, "cpu": 0.0, "structures": 0}
        self._reset()

    def _reset(self) -> None:
        self._data = self._step = self._cpu = 0.0
        self._structures = 0

    def attach(self, trainer: Engine) -> "StepTimer":
        trainer.state.throughput = float("nan")
        trainer.state.data_wait_share = float("nan")
        trainer.add_event_handler(Events.GET_BATCH_STARTED, self._batch_started)
        trainer.add_event_handler(Events.GET_BATCH_COMPLETED, self._batch_completed)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        return self

    def _batch_started(self, engine: Engine) -> None:
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()

    def _batch_completed(self, engine: Engine) -> None:
        self._t1 = time.perf_counter()
        self._data += self._t1 - self._t0

    def _iteration_completed(self, engine: Engine) -> None:
        if not hasattr(self, "_t1"):
            return
        self._step += time.perf_counter() - self._t1
        self._cpu += time.process_time() - self._c0
        self._structures += int(engine.state.output.get("num_structures", 0))
        if engine.state.iteration % self.every == 0:
            total = self._data + self._step
            engine.state.throughput = self._structures / total if total > 0 else float("nan")
            engine.state.data_wait_share = self._data / total if total > 0 else float("nan")
            self.totals["data"] += self._data
            self.totals["step"] += self._step
            self.totals["cpu"] += self._cpu
            self.totals["structures"] += self._structures
            self._reset()
