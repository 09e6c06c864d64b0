"""Training run assembled from Ignite pieces, shaped like Ignite's cifar10 example.

:func:`train` is the entry point (``e3relax train`` calls it): it launches :func:`training` through
``idist.Parallel`` on one process, several local processes (``nproc_per_node``) or under torchrun.
:func:`training` builds data, model, optimizer and loss, the trainer and evaluator engines and their
handlers, optionally restores the last checkpoint of the run folder, and runs.
"""
from __future__ import annotations

import importlib
import logging
import math
import os
import random
import signal
from pathlib import Path
from typing import Any, Callable, Mapping

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events

from e3relax.device import resolve_device
from e3relax.engine.budget import TimeBudget, ValidationHistory
from e3relax.engine.checkpoint import load_checkpoint, model_weights, restore_run
from e3relax.engine.config import save_config
from e3relax.model_base import check_graph
from e3relax.engine.data import (build_dataset, collate, eval_loader, prepare_batch, skipped_records,
                                 train_loader, training_info)
from e3relax.engine.evaluator import create_evaluator
from e3relax.engine.rewind import train_rewinding
from e3relax.engine.run_dir import prepare_run_dir
from e3relax.errors import InputError, Interrupted
from e3relax.metrics import MAE_POS, MAE_VOL, POOLED_MAE_POS, SHAPE_DEV
from e3relax.engine.handlers import (LRSchedule, SignalStop, StepTimer, attach_checkpoints, attach_early_stopping,
                                     attach_ema, attach_plateau, NonFiniteSteps)
from e3relax import keys

__all__ = ["train", "training", "create_trainer", "resolve_device", "resolve_dtype", "seed_everything",
           "prepare_run_dir"]

log = logging.getLogger(__name__)


def resolve_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def create_trainer(model: torch.nn.Module, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                   device: torch.device, dtype: torch.dtype, grad_clip: float | None = None,
                   amp: str | None = None, scaler: Any = None, project: Callable | None = None) -> Engine:
    """Trainer engine: one optimiser step per batch on the layer-wise loss, with gradient clipping.

    The step output is a dict of floats: ``loss`` (averaged over processes in a distributed run),
    each per-layer term of this process (``pos/0``, ``cell/0``, ...), ``grad_norm`` (before
    clipping, of the all-reduced gradients), ``skipped_step`` (1 when the loss or the gradient norm
    is not finite: the optimiser step is skipped, as a gradient scaler does) and ``num_structures``.
    ``project(out, batch)`` (``symmetry.train``) maps the output before the loss.
    """
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "", None)
    use_amp = amp_dtype is not None and device.type == "cuda"
    max_norm = float(grad_clip) if grad_clip else math.inf

    def step(engine: Engine, batch: Any) -> dict[str, float]:
        model.train()
        batch = prepare_batch(batch, device, dtype)
        with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=use_amp):
            out = model(batch)
            if project is not None:
                out = project(out, batch)
            total, terms = loss_fn(out, batch)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.unscale_(optimizer)
        else:
            total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        loss = total.detach()
        if idist.get_world_size() > 1:  # every rank logs, and skips a non-finite step, at the same value
            loss = idist.all_reduce(loss.clone()) / idist.get_world_size()
        skipped = False
        if scaler is not None:  # the fp16 scaler skips steps with inf/NaN gradients itself
            scaler.step(optimizer)
            scaler.update()
        elif bool(torch.isfinite(loss)) and bool(torch.isfinite(grad_norm)):
            optimizer.step()
        else:  # weights and optimiser moments stay as they were (NonFiniteSteps logs and counts it)
            skipped = True
        result = {"loss": float(loss), "grad_norm": float(grad_norm), "skipped_step": float(skipped)}
        result.update({k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()})
        result["num_structures"] = int(batch.num_graphs)
        return result

    return Engine(step)


def _build_model(config: Mapping[str, Any], device: torch.device, dtype: torch.dtype, resume: bool):
    from e3relax.registry import MODELS

    model = MODELS.build(config["model"]).to(device=device, dtype=dtype)
    if config.get("init_from") and not resume:
        ckpt = load_checkpoint(config["init_from"])
        model.load_state_dict(model_weights(ckpt, config["init_weights"]))
        log.info("initialised %s weights from %s", config["init_weights"], config["init_from"])
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"model '{config['model']['name']}' has no trainable parameters; nothing to train")
    return idist.auto_model(model)


def _build_optimizer(model: torch.nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    from e3relax.model_base import param_groups

    # zero-initialised last projections carry an lr_scale (models start at their input, then catch up)
    opt = torch.optim.AdamW(param_groups(model, float(cfg["lr"])), lr=float(cfg["lr"]),
                            weight_decay=float(cfg["weight_decay"]), amsgrad=bool(cfg["amsgrad"]),
                            betas=tuple(float(b) for b in cfg["betas"]))
    return idist.auto_optim(opt)


def _run_hooks(config: Mapping[str, Any], trainer: Engine, evaluator: Engine, context: dict) -> None:
    for path in config.get("hooks") or []:
        module, _, attr = str(path).rpartition(".")
        if not module:
            raise ValueError(f"hook '{path}' must be a dotted path pkg.module.function")
        getattr(importlib.import_module(module), attr)(trainer, evaluator, context)


def _attach_logging(trainer: Engine, evaluator: Engine, optimizer, config: Mapping[str, Any], run_dir: Path):
    """Rank-0 only: TensorBoard, progress bar and a log line per evaluation."""
    tb = None
    if config["log"]["tensorboard"]:
        from e3relax.engine.tensorboard import setup_tensorboard

        tb = setup_tensorboard(run_dir / "tb", trainer, evaluator, optimizer, config)
    if config["log"]["progress_bar"]:
        from e3relax.progress import attach_progress

        attach_progress(trainer, "train", "steps", output_transform=lambda out: {"loss": out["loss"]})

    @evaluator.on(Events.COMPLETED)
    def _log(engine: Engine) -> None:
        m = engine.state.metrics
        log.info("iteration %d: val mae_pos %.4f (mean over structures; Dummy %.4f), pooled_mae_pos %.4f "
                 "(pooled over atoms, selects best.pt), shape %.4f, volume %.4f",
                 trainer.state.iteration, m[MAE_POS], m["dummy/" + MAE_POS], m[POOLED_MAE_POS],
                 m[SHAPE_DEV], m[MAE_VOL])
    return tb


def _attach_validation(trainer: Engine, evaluator: Engine, optimizer, val_ds, config: Mapping[str, Any]) -> dict:
    """Evaluate every epoch_length steps; LR decay and early stopping on the result. Returns their
    stateful handlers (for the checkpoint)."""
    if val_ds is None:
        log.warning("no validation data (data.val): no LR decay, early stopping or best checkpoint")
        return {}
    data_cfg = config["data"]
    vloader = eval_loader(val_ds, int(data_cfg["val_batch_size"] or data_cfg["batch_size"]),
                          int(data_cfg["num_workers"]), data_cfg["max_val_structures"])
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run(vloader))
    out: dict[str, Any] = {}
    if config["schedule"]["lr_schedule"] == "plateau":
        out["scheduler"] = attach_plateau(evaluator, optimizer, config["schedule"])
    stopper = attach_early_stopping(evaluator, trainer, config["schedule"]["early_stop_patience"])
    if stopper is not None:
        out["early_stopping"] = stopper
    return out


def _spec_name(spec: Any, key: str) -> str:
    return f"{key} ({spec})" if isinstance(spec, (str, Path)) else key


def _check_ready(ds, what: str, labelled: bool) -> None:
    """Fail before training on an empty or unreadable dataset, naming it."""
    if len(ds) == 0:
        raise InputError(f"{what} holds no structures")
    first = ds[0]
    collate([first])
    if labelled and (keys.POS_R not in first or keys.CELL_R not in first):
        raise InputError(f"{what} is not labelled (its records have no relaxed structure, "
                         f"'{keys.POS_R}'/'{keys.CELL_R}'); validation needs labelled data")


#: ``compile_kernels: auto`` compiles when a run plans at least this many optimiser steps
AUTO_COMPILE_STEPS = 2000


def compile_kernels_wanted(config: Mapping[str, Any], device: torch.device) -> bool:
    """``compile_kernels``: true, false, or ``auto`` (the default): compile on CPU and CUDA when the run
    plans at least :data:`AUTO_COMPILE_STEPS` steps, so the one-time compilation (about 10 CPU-seconds)
    is paid back; short runs and tests stay eager.

    Raises:
        ConfigError: for any other value, naming the key.
    """
    from e3relax.engine.config import ConfigError

    choice = config["compile_kernels"]
    if isinstance(choice, bool):
        return choice
    if choice != "auto":
        raise ConfigError(f"compile_kernels: expected true, false or auto, got {choice!r}", "compile_kernels")
    sched = config["schedule"]
    planned = int(sched["max_epochs"]) * int(sched["epoch_length"])
    return device.type in ("cpu", "cuda") and planned >= AUTO_COMPILE_STEPS


def _attach_budget(trainer: Engine, evaluator: Engine, schedule: Mapping[str, Any]) -> dict[str, Any]:
    """The validation history and the time budget (``schedule.time_limit_s``), saved with the checkpoints."""
    out: dict[str, Any] = {"val_history": ValidationHistory(MAE_POS).attach(trainer, evaluator)}
    if schedule["time_limit_s"] is not None:
        out["time_budget"] = TimeBudget(float(schedule["time_limit_s"]), schedule["time_clock"]).attach(trainer)
    return out


def _datasets(config: Mapping[str, Any], datasets: Mapping[str, Any] | None):
    datasets, dtype = dict(datasets or {}), resolve_dtype(config["dtype"])
    skip = bool(config["data"]["skip_bad_records"])
    specs = {name: datasets.get(name, config["data"][name]) for name in ("train", "val")}
    train_ds = build_dataset(specs["train"], dtype, skip, "data.train")
    val_ds = build_dataset(specs["val"], dtype, skip, "data.val")
    if train_ds is None:
        raise InputError("no training data: set data.train to an LMDB path")
    _check_ready(train_ds, f"training set {_spec_name(specs['train'], 'data.train')}", labelled=True)
    if val_ds is not None:
        what = f"validation set {_spec_name(specs['val'], 'data.val')}"
        _check_ready(val_ds, what, labelled=True)
        if config["data"]["max_val_structures"] is not None and int(config["data"]["max_val_structures"]) < 1:
            raise InputError(f"data.max_val_structures is {config['data']['max_val_structures']}: the "
                             f"{what} would be empty")
    return train_ds, val_ds


def training(local_rank: int, config: dict[str, Any], resume: bool = False,
             datasets: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One process of a training run (all ranks run this; rank 0 logs and saves).

    Args:
        local_rank: given by ``idist.Parallel``.
        config: the resolved config (:func:`e3relax.engine.config.resolve_config`).
        resume: restore ``run_dir/checkpoints/last.pt`` and continue.
        datasets: optional in-memory datasets ``{"train": ..., "val": ...}`` overriding ``data.*``.

    Returns:
        a summary: final iteration, best validation score, timing totals.
    """
    rank, run_dir = idist.get_rank(), Path(config["run_dir"])
    if not logging.getLogger().handlers:  # a spawned worker process: nobody configured logging here
        logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("ignite.engine.engine.Engine").setLevel(logging.WARNING)
    device, dtype = resolve_device(config["device"]), resolve_dtype(config["dtype"])
    seed_everything(int(config["seed"]) + rank)
    data_cfg = config["data"]
    train_ds, val_ds = _datasets(config, datasets)
    from e3relax.engine.augment import wrap_training_set

    loader, sampler = train_loader(wrap_training_set(train_ds, config), int(data_cfg["batch_size"]),
                                   int(config["seed"]), int(data_cfg["num_workers"]))
    torch.set_flush_denormal(bool(config["flush_denormal"]))  # process-wide until the run ends; see DEFAULTS
    from e3relax.nn.common import use_compiled_kernels

    use_compiled_kernels(compile_kernels_wanted(config, device))
    model = _build_model(config, device, dtype, resume)
    from e3relax.priors import fit_priors

    # an unfitted composition prior (model.prior) is fitted on data.train; fine-tuning refits it there
    fit_priors(model, train_ds, refit=bool(config.get("init_from")) and not resume)
    for ds, what in ((train_ds, "data.train"), (val_ds, "data.val")):
        check_graph(model, ds, what)  # a model that needs another graph refuses the data
    optimizer = _build_optimizer(model, config["optim"])
    from e3relax.registry import LOSSES

    loss_fn = LOSSES.build(config["loss"]).to(device)
    scaler = torch.amp.GradScaler("cuda") if config["amp"] == "fp16" and device.type == "cuda" else None
    from e3relax.engine.symmetry import TrainingSymmetry

    project = TrainingSymmetry.from_config(config["symmetry"])  # symmetry.train: the projection before the loss
    trainer = create_trainer(model, loss_fn, optimizer, device, dtype, config["optim"]["grad_clip"], config["amp"],
                             scaler, project)
    timer = StepTimer(int(config["log"]["every"])).attach(trainer)
    nonfinite = NonFiniteSteps(config["optim"]["max_nonfinite_steps"], run_dir if rank == 0 else None,
                               model).attach(trainer)
    ema = attach_ema(trainer, model, config["ema"])
    evaluator = create_evaluator(ema.ema_model, device, dtype, config["amp"], project)
    objects: dict[str, Any] = {"model": model, "ema_model": ema.ema_model, "optimizer": optimizer, "trainer": trainer,
                               "nonfinite_steps": nonfinite}
    objects.update(_attach_validation(trainer, evaluator, optimizer, val_ds, config))
    objects.update(_attach_budget(trainer, evaluator, config["schedule"]))
    sched = config["schedule"]
    LRSchedule(optimizer, sched["lr_schedule"], config["optim"]["lr"], sched["min_lr"], sched["warmup_steps"],
               int(sched["max_epochs"]) * int(sched["epoch_length"]), objects.get("time_budget")).attach(trainer)
    if scaler is not None:
        objects["scaler"] = scaler
    ckpt_cfg = config["checkpoint"]
    best, full, last = attach_checkpoints(trainer, evaluator, run_dir, config, objects, ckpt_cfg["every_steps"],
                                          ckpt_cfg["every_minutes"], training_info(train_ds, config.get("init_from")))
    tb = _attach_logging(trainer, evaluator, optimizer, config, run_dir) if rank == 0 else None
    _run_hooks(config, trainer, evaluator, {"model": model, "ema_model": ema.ema_model, "optimizer": optimizer,
                                            "sampler": sampler, "config": config, "run_dir": run_dir})
    if rank == 0:  # written once data, model and hooks are ready: a failed start leaves no config.yaml
        save_config(config, run_dir / "config.yaml")
    stop = SignalStop(last).attach(trainer)  # last: after every other handler of an iteration
    if resume:
        restore_run(full, run_dir)
        if trainer.state.iteration >= int(sched["max_epochs"]) * int(sched["epoch_length"]):
            log.info("run in %s already finished at iteration %d", run_dir, trainer.state.iteration)
            return {"iteration": trainer.state.iteration, "finished": True}
        log.info("resuming %s at iteration %d", run_dir, trainer.state.iteration)
    sampler.start_batch = trainer.state.iteration
    try:
        trainer.run(loader, max_epochs=int(sched["max_epochs"]), epoch_length=int(sched["epoch_length"]))
    finally:
        stop.close()
        if tb is not None:
            tb.close()
        if config["flush_denormal"]:
            torch.set_flush_denormal(False)  # torch's default again for whatever runs next in this process
    saved = best.state_dict()["_saved"] if val_ds is not None else []
    t = timer.totals
    busy = t["data"] + t["step"]
    out: dict[str, Any] = {}
    if stop.signum is not None:
        out["interrupted"] = {"signal": int(stop.signum), "iteration": trainer.state.iteration,
                              "saved_iteration": last.saved_iteration}
    out["skipped_nonfinite_steps"] = nonfinite.total  # over the whole run, as are the rewinds
    out["rewinds"] = list(nonfinite.rewinds)
    if nonfinite.stopped_at is not None:
        out["stopped_nonfinite"] = {"iteration": nonfinite.stopped_at, "saved_iteration": last.saved_iteration}
    skipped = skipped_records(train_ds) + (skipped_records(val_ds) if val_ds is not None else 0)
    if skipped:
        out["skipped_records"] = skipped
    out.update({"val_history": objects["val_history"].history, "val_records": objects["val_history"].records,
                **TimeBudget.summary(objects.get("time_budget"))})
    return {**out, "iteration": trainer.state.iteration, "best_val_pooled_mae_pos": -saved[-1][0] if saved else None,
            "best_val_coord_mae": -saved[-1][0] if saved else None,  # the same (pooled) value, older name
            "structures_per_s": t["structures"] / busy if busy else None,
            "structures_per_cpu_s": t["structures"] / t["cpu"] if t["cpu"] else None,
            "data_wait_share": t["data"] / busy if busy else None, "timing": dict(t), "run_dir": str(run_dir)}


def _interrupted(signum: int, run_dir: str | Path, iteration: int | None) -> Interrupted:
    where = f"at iteration {iteration}" if iteration is not None else "before any step"
    saved = f"saved {Path(run_dir) / 'checkpoints' / 'last.pt'}; " if iteration is not None else ""
    return Interrupted(signum, f"{signal.Signals(signum).name}: stopped {where}; {saved}"
                               f"continue with: e3relax train --resume {run_dir}")


def train(config: dict[str, Any], resume: bool = False, datasets: Mapping[str, Any] | None = None) -> dict | None:
    """Run :func:`training` on one process, ``nproc_per_node`` local ones, or under torchrun (rewinds: ``rewind``).

    Returns:
        rank 0's summary when run in this process (single process), else None.

    Raises:
        Interrupted: after SIGINT or SIGTERM stopped the run and last.pt was saved (single process).
    """
    dist = config["distributed"]
    nproc = int(dist["nproc_per_node"] or 1)
    under_launcher = int(os.environ.get("WORLD_SIZE", "1")) > 1
    backend = None
    if nproc > 1 or under_launcher:
        backend = dist["backend"] or ("nccl" if torch.cuda.is_available() and config["device"] != "cpu" else "gloo")
    kwargs: dict[str, Any] = {}
    if nproc > 1:
        kwargs["nproc_per_node"] = nproc
        if dist["master_port"]:
            kwargs["master_port"] = int(dist["master_port"])
    if backend is None:
        summary = train_rewinding(0, config, resume, datasets)
        if "interrupted" in summary:
            info = summary["interrupted"]
            raise _interrupted(info["signal"], config["run_dir"], info["saved_iteration"])
        return summary
    received: list[int] = []
    previous = {}
    if nproc > 1:  # the local processes save and stop themselves; this one waits for them
        for sig in SignalStop.SIGNALS:
            previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        with idist.Parallel(backend=backend, **kwargs) as parallel:
            parallel.run(train_rewinding, config, resume, datasets)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise Interrupted(received[0], f"{signal.Signals(received[0]).name}: stopped; continue with: "
                                       f"e3relax train --resume {config['run_dir']}")
    return None
