"""A SIGKILLed ``e3relax data convert --workers 2`` leaves no worker running."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e3relax.datasets.importers.base import Importer, Skipped

psutil = pytest.importorskip("psutil")

TESTS = Path(__file__).resolve().parent


class SlowImporter(Importer):
    """An endless source whose every item takes 0.2 s (keeps the pool busy until it is killed)."""

    def tasks(self):
        yield from range(10**6)

    def load(self, task):
        time.sleep(0.2)
        return Skipped(str(task), "error", "test item")


def _workers(proc: subprocess.Popen, n: int, timeout: float = 60.0) -> list:
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = parent.children()
        if len(children) >= n:
            return children
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    raise AssertionError(f"no {n} workers after {timeout} s")


def _stopped(p) -> bool:
    """Exited: gone, or a zombie waiting for whoever adopted it to reap it."""
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_stopped(procs: list, timeout: float) -> tuple[float, list]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        alive = [p for p in procs if not _stopped(p)]
        if not alive:
            return time.monotonic() - t0, []
        time.sleep(0.02)
    return time.monotonic() - t0, [p for p in procs if not _stopped(p)]


def _assert_workers_end_with(cmd: list[str], what: str, env: dict | None = None, busy_s: float = 0.5) -> None:
    """Start ``cmd`` (a pool of 2 workers), SIGKILL it once both are busy, and require that its
    workers stop within 2 s."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        workers = _workers(proc, 2)
        time.sleep(busy_s)  # both busy with an item
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        elapsed, alive = _wait_stopped(workers, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    for p in alive:
        p.kill()
    assert not alive, f"{len(alive)} worker(s) still running 10 s after the {what} was killed"
    assert elapsed < 2.0, f"{what} workers took {elapsed:.1f} s to stop"


def test_workers_stop_when_the_converter_is_killed(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "e3relax.cli.main", "data", "convert", "test_orphans.SlowImporter",
           "--src", str(tmp_path), "--out", str(tmp_path / "out"), "--workers", "2", "--no-progress"]
    _assert_workers_end_with(cmd, "converter", env)


def test_die_with_parent_uses_the_kernel_on_linux():
    from e3relax.datasets.worker import die_with_parent

    if not sys.platform.startswith("linux"):
        pytest.skip("prctl is Linux only")
    code = ("import os; from e3relax.datasets.worker import die_with_parent; "
            "print(die_with_parent(os.getppid()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "pdeathsig", out.stderr
    assert callable(die_with_parent)


def test_generator_workers_stop_when_the_generator_is_killed(tmp_path):
    cmd = [sys.executable, "-m", "e3relax.cli.main", "data", "generate", "--n", "100000", "--relaxer", "emt",
           "--out", str(tmp_path / "gen"), "--workers", "2", "--no-progress"]
    _assert_workers_end_with(cmd, "generator", busy_s=1.0)
