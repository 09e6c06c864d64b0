"""Ctrl-C (SIGINT) and SIGTERM stop ``e3relax train`` cleanly: last.pt at the current step, one line on
how to resume, exit status 130 / 143; the run resumed from there equals an uninterrupted one bit for
bit. last.pt is also written every ``checkpoint.every_steps`` steps and ``every_minutes`` minutes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from ignite.engine import Events

import test_engine_toy as toy
from e3relax.cli.main import main
from e3relax.engine.checkpoint import load_checkpoint

TESTS = Path(__file__).resolve().parent
DELAY = "E3RELAX_TEST_STEP_DELAY"
TOTAL = 16  # epoch_length 4 x max_epochs 4


def progress(trainer, evaluator, context):
    """Hook: write the iteration to run_dir/progress after each step; sleep there when asked (so that a
    signal sent by the test lands in the middle of the run)."""
    path, delay = Path(context["run_dir"]) / "progress", float(os.environ.get(DELAY, "0"))

    @trainer.on(Events.ITERATION_COMPLETED)
    def _step(engine):
        path.write_text(str(engine.state.iteration))
        if delay:
            time.sleep(delay)


SEEN: dict = {}
SIGTERM_AT: dict = {}


def sigterm_at(trainer, evaluator, context):
    """Hook: send this process a real SIGTERM after step ``SIGTERM_AT["iteration"]``."""
    @trainer.on(Events.ITERATION_COMPLETED)
    def _kill(engine):
        if engine.state.iteration == SIGTERM_AT.get("iteration"):
            os.kill(os.getpid(), signal.SIGTERM)


def peek_last(trainer, evaluator, context):
    """Hook: note the iteration of last.pt on disk after every step."""
    @trainer.on(Events.ITERATION_COMPLETED)
    def _peek(engine):
        path = Path(context["run_dir"]) / "checkpoints" / "last.pt"
        SEEN[engine.state.iteration] = load_checkpoint(path)["trainer"]["iteration"] if path.exists() else None


def _config(tmp_path) -> Path:
    train_db = toy.write_lmdb(tmp_path / "train.lmdb", range(12))
    val_db = toy.write_lmdb(tmp_path / "val.lmdb", range(100, 104))
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: {name: test_engine_toy.ToyModel, hidden_channels: 8}\n"
                   "loss: {name: test_engine_toy.ToyLoss}\ndtype: float64\ndevice: cpu\nseed: 4\n"
                   f"data: {{train: {train_db}, val: {val_db}, batch_size: 4}}\noptim: {{lr: 3.0e-3}}\n"
                   "schedule: {epoch_length: 4, max_epochs: 4, plateau_patience: 1}\n"
                   "log: {progress_bar: false, figures: false, tensorboard: false}\n"
                   "hooks: [test_interrupt.progress]\n")
    return cfg


def _interrupt(args: list[str], run_dir: Path, after: int, signum: int) -> tuple[int, str]:
    """Start ``e3relax train ARGS`` in a subprocess, send ``signum`` once it passed ``after`` steps."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", **{DELAY: "0.1"})
    proc = subprocess.Popen([sys.executable, "-m", "e3relax.cli.main", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress_file = run_dir / "progress"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if progress_file.exists() and progress_file.read_text() and int(progress_file.read_text()) >= after:
                proc.send_signal(signum)
                break
            time.sleep(0.02)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def _state(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def _assert_same(ref: dict, got: dict) -> None:
    for key in ("model", "ema_model"):
        for name, value in ref[key].items():
            assert torch.equal(value, got[key][name]), f"{key}.{name} differs"
    for k, v in ref["optimizer"]["state"].items():
        for name, t in v.items():
            assert torch.equal(torch.as_tensor(t), torch.as_tensor(got["optimizer"]["state"][k][name])), name
    assert ref["optimizer"]["param_groups"] == got["optimizer"]["param_groups"]
    assert ref["scheduler"] == got["scheduler"]
    assert ref["trainer"]["iteration"] == got["trainer"]["iteration"] == TOTAL


def test_signals_save_and_resume_bit_for_bit(tmp_path, capsys):
    cfg = _config(tmp_path)
    run, ref = tmp_path / "run", tmp_path / "ref"
    rc, err = _interrupt(["--config", str(cfg), "--run-dir", str(run)], run, after=3, signum=signal.SIGINT)
    assert rc == 130, err
    first = _state(run)["trainer"]["iteration"]
    assert 3 <= first < TOTAL
    last_line = err.strip().splitlines()[-1]
    assert last_line == (f"e3relax train: SIGINT: stopped at iteration {first}; saved {run}/checkpoints/last.pt; "
                         f"continue with: e3relax train --resume {run}")
    assert "Traceback" not in err and "KeyboardInterrupt" not in err

    SIGTERM_AT["iteration"] = first + 3  # a real SIGTERM, sent from inside this process
    hooks = "hooks=[test_interrupt.progress,test_interrupt.sigterm_at]"
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--resume", str(run), hooks]) == 143
    finally:
        torch.set_num_threads(torch_threads)
    assert _state(run)["trainer"]["iteration"] == first + 3
    assert f"SIGTERM: stopped at iteration {first + 3}; " in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--resume", str(run), "hooks=[]"]) == 0
        assert main(["train", "--config", str(cfg), "--run-dir", str(ref)]) == 0
    finally:
        torch.set_num_threads(torch_threads)
    _assert_same(_state(ref), _state(run))


def test_last_checkpoint_every_steps_and_minutes(tmp_path):
    data = {"train": toy.make_dataset(8), "val": toy.make_dataset(4, start=100)}
    from e3relax.engine.trainer import train

    SEEN.clear()
    cfg = toy.toy_config(tmp_path / "steps", hooks=["test_interrupt.peek_last"],
                         schedule={"epoch_length": 10, "max_epochs": 1}, checkpoint={"every_steps": 3},
                         log={"tensorboard": False})
    train(cfg, datasets=data)
    assert [SEEN[i] for i in range(1, 10)] == [None, None, 3, 3, 3, 6, 6, 6, 9]
    SEEN.clear()
    cfg = toy.toy_config(tmp_path / "minutes", hooks=["test_interrupt.peek_last"],
                         schedule={"epoch_length": 10, "max_epochs": 1}, checkpoint={"every_minutes": 1e-9},
                         log={"tensorboard": False})
    train(cfg, datasets=data)
    assert [SEEN[i] for i in range(1, 10)] == list(range(1, 10))
