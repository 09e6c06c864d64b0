"""The (model, seed) runs of a comparison as jobs: train or resume, test, write the record; several at once.

A job is described by a JSON-able spec (:func:`job_spec`) and does the same work whether it runs in
the comparison's process or in its own (``python -m e3relax.benchmark.jobs SPEC.json``, one thread):

1. train ``run`` with ``seed`` under the budget; a run folder that holds ``checkpoints/last.pt``
   is resumed exactly where it stopped (``e3relax train --resume``), so a comparison stopped at any
   point continues;
2. test the best-validation EMA weights (metrics, matching, timing; per-structure CSV);
3. write the record to ``OUT/records/<key>_s<seed>.json`` (atomically, last). A job whose record
   exists is finished and is not run again; one whose training finished (``trained.json`` in its
   run folder) but whose test did not is tested again without retraining.

:func:`run_jobs` runs the pending jobs, ``jobs`` at a time, each in its own process with
``OMP_NUM_THREADS=1``, and reports each one as it finishes. The job processes run in their own
sessions: a SIGINT or SIGTERM to the comparison (Ctrl-C, ``kill``, or its whole process group) is
passed on to each job once, and the comparison waits for them to save their checkpoints. A job
holds a lock on ``OUT/jobs/<key>_s<seed>.lock`` while it runs, so a second comparison started on
the same folder cannot train the same run twice at once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from e3relax.errors import InputError, Interrupted

__all__ = ["job_spec", "record_path", "run_job", "run_jobs"]

log = logging.getLogger(__name__)


#: written into a run folder once its training finished (the training part of the record)
TRAINED = "trained.json"


def record_path(out: Path, key: str, seed: int) -> Path:
    return Path(out) / "records" / f"{key}_s{seed}.json"


def job_spec(run: Any, seed: int, splits: Mapping[str, Path], budget: Any, out: Path, device: str,
             match_max: int | None, timing_structures: int, frames: Any, progress_bar: bool = False) -> dict:
    """Everything one (model, seed) job needs, as plain JSON."""
    return {"run": dataclasses.asdict(run), "seed": int(seed), "splits": {k: str(v) for k, v in splits.items()},
            "budget": budget.as_dict(), "out": str(out), "device": device, "match_max": match_max,
            "timing_structures": int(timing_structures), "frames": dataclasses.asdict(frames),
            "progress_bar": bool(progress_bar)}


def run_job(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Train (or resume) and test one (model, seed); returns the record (also written to its file)."""
    from e3relax.benchmark.budget import Budget
    from e3relax.benchmark.suite import ModelRun

    run, seed, out = ModelRun(**spec["run"]), int(spec["seed"]), Path(spec["out"])
    with job_lock(out / "jobs" / f"{run.key}_s{seed}.lock"):
        return _run_job(spec, run, seed, out, Budget(**spec["budget"]))


@contextlib.contextmanager
def job_lock(path: Path):
    """Hold an exclusive lock on ``path`` (released when the process ends, however it ends).

    Raises:
        InputError: another process holds it (the same job is running elsewhere).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise InputError(f"{path}: this job is already running (process {handle.read().strip() or '?'}); "
                             "stop that comparison first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def _run_job(spec: Mapping[str, Any], run: Any, seed: int, out: Path, budget: Any) -> dict[str, Any]:
    from e3relax.benchmark.compare import write_per_structure
    from e3relax.benchmark.runner import test_model, train_model
    from e3relax.datasets.reader import LmdbDataset
    from e3relax.device import resolve_device
    from e3relax.predict.prepare import FrameSettings

    run_dir = out / "runs" / f"{run.key}_s{seed}"
    trained = run_dir / TRAINED
    if trained.exists():  # training finished before the test was written: test again, do not retrain
        from e3relax.engine.checkpoint import model_from_checkpoint

        record = json.loads(trained.read_text(encoding="utf-8"))
        model, _ = model_from_checkpoint(run_dir / "checkpoints" / record["checkpoint"], weights="ema",
                                         device=spec["device"])
    else:
        resume = (run_dir / "checkpoints" / "last.pt").exists()
        log.info("%s seed %d: %s (%s)", run.label, seed, "resuming from its last checkpoint" if resume else
                 "training", budget.describe())
        # a signal stops the training after it saved last.pt (Interrupted): the next run resumes it
        model, record = train_model(run, seed, {k: Path(v) for k, v in spec["splits"].items()}, budget, run_dir,
                                    spec["device"], progress_bar=spec["progress_bar"], resume=resume)
        _write_atomic(trained, record)
    test_ds = LmdbDataset(spec["splits"]["test"])
    preds, test = test_model(model, test_ds, resolve_device(spec["device"]), budget.batch_size, spec["match_max"],
                             spec["timing_structures"], FrameSettings(**spec["frames"]))
    write_per_structure(preds, out / "per_structure" / f"{run.key}_s{seed}.csv")
    record = {**record, **test, "run_dir": str(run_dir)}
    _write_atomic(record_path(out, run.key, seed), record)
    return record


def _write_atomic(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=True), encoding="utf-8")
    tmp.replace(path)


def job_command(spec_file: Path) -> list[str]:
    return [sys.executable, "-m", "e3relax.benchmark.jobs", str(spec_file)]


def _launch(spec: Mapping[str, Any], folder: Path) -> subprocess.Popen:
    key = f"{spec['run']['key']}_s{spec['seed']}"
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = folder / f"{key}.json"
    spec_file.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    log_file = open(folder / f"{key}.log", "a", encoding="utf-8")  # noqa: SIM115 - closed with the process
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(job_command(spec_file), stdout=log_file, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)  # signals reach it only through run_jobs, once
    proc.log_file = log_file  # type: ignore[attr-defined]
    return proc


def run_jobs(specs: Sequence[Mapping[str, Any]], jobs: int, on_done: Callable[[Mapping, dict | None], None],
             poll_s: float = 2.0) -> None:
    """Run ``specs`` ``jobs`` at a time (``jobs == 1``: in this process); ``on_done(spec, record)``
    after each (``record`` None when the job failed: its log says why)."""
    if jobs <= 1:
        for spec in specs:
            try:
                record = run_job(spec)
            except Interrupted:
                raise
            except Exception:  # noqa: BLE001 - one failing model must not end the comparison
                log.exception("%s seed %d failed; continuing with the next run", spec["run"]["label"], spec["seed"])
                record = None
            on_done(spec, record)
        return
    pending, active = list(specs), []
    folder = Path(specs[0]["out"]) / "jobs" if specs else Path(".")
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _interrupt)
    try:
        _schedule(pending, active, jobs, folder, on_done, poll_s)
    except KeyboardInterrupt:  # pass the stop on, once: each job saves its last checkpoint and stops
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        for _, proc in active:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in active:
            proc.wait()
            proc.log_file.close()
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: Any) -> None:
    log.warning("%s: stopping the running jobs (each saves its last checkpoint)", signal.Signals(signum).name)
    raise KeyboardInterrupt


def _schedule(pending: list, active: list, jobs: int, folder: Path, on_done: Callable, poll_s: float) -> None:
    while pending or active:
        while pending and len(active) < jobs:
            spec = pending.pop(0)
            active.append((spec, _launch(spec, folder)))
            log.info("started %s seed %d in its own process (log: %s)", spec["run"]["label"], spec["seed"],
                     folder / f"{spec['run']['key']}_s{spec['seed']}.log")
        time.sleep(poll_s)
        for item in list(active):
            spec, proc = item
            if proc.poll() is None:
                continue
            active.remove(item)
            proc.log_file.close()
            path = record_path(Path(spec["out"]), spec["run"]["key"], spec["seed"])
            ok = proc.returncode == 0 and path.exists()
            if not ok:
                log.error("%s seed %d failed (exit status %s); see %s", spec["run"]["label"], spec["seed"],
                          proc.returncode, folder / f"{spec['run']['key']}_s{spec['seed']}.log")
            on_done(spec, json.loads(path.read_text(encoding="utf-8")) if ok else None)


def job_logging() -> None:
    """The log of a comparison and of each job (``OUT/jobs/<key>_s<seed>.log``): their own lines and
    the trainer's (each validation, a resume), without the engine's and libraries' chatter, so an
    hours-long run shows its progress whether it runs in its own process or in the comparison's."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stdout)
    for noisy in ("ignite", "e3relax.engine", "pymatgen"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("e3relax.engine.trainer").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    job_logging()
    argv = sys.argv[1:] if argv is None else argv
    try:
        run_job(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    except Interrupted as exc:
        log.warning("%s", exc.message)
        return exc.exit_status
    except InputError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
