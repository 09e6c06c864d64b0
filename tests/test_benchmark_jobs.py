"""Comparison jobs as processes: a stop signal to the comparison reaches every running job exactly
once (and the comparison waits for them), and one job cannot run twice at once."""
from __future__ import annotations

import os
import signal
import sys
import threading

import pytest

from e3relax.benchmark import jobs
from e3relax.errors import InputError

#: a stand-in job: writes how many SIGTERMs it got (a second one would abort a real job unsaved)
CHILD = """
import pathlib, signal, sys, time
got = []
def term(signum, frame):
    got.append(signum)
    time.sleep(0.5)  # a real job saves its checkpoint here; a second signal would land now
    pathlib.Path(sys.argv[1]).write_text(str(len(got)))
    sys.exit(143)
signal.signal(signal.SIGTERM, term)
pathlib.Path(sys.argv[1] + ".started").write_text("")
time.sleep(60)
"""


def test_a_signal_to_the_comparison_reaches_each_job_once(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "job_command", lambda spec_file: [sys.executable, "-c", CHILD,
                                                                str(spec_file.with_suffix(".signals"))])
    specs = [{"run": {"key": f"m{i}", "label": f"M{i}"}, "seed": 0, "out": str(tmp_path)} for i in range(2)]
    started = [tmp_path / "jobs" / f"m{i}_s0.signals.started" for i in range(2)]

    def stop_when_started():
        while not all(p.exists() for p in started):
            threading.Event().wait(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill <comparison pid>` does

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=stop_when_started, daemon=True).start()
    done = []
    with pytest.raises(KeyboardInterrupt):
        jobs.run_jobs(specs, 2, lambda spec, record: done.append(spec), poll_s=0.05)
    assert [(tmp_path / "jobs" / f"m{i}_s0.signals").read_text() for i in range(2)] == ["1", "1"]
    assert done == []  # none finished: both were stopped (and waited for)
    assert signal.getsignal(signal.SIGTERM) is before  # the comparison's handlers are undone


def test_one_job_cannot_run_twice_at_once(tmp_path):
    lock = tmp_path / "jobs" / "e3relax_s0.lock"
    with jobs.job_lock(lock):
        with pytest.raises(InputError, match=rf"e3relax_s0.lock: this job is already running \(process {os.getpid()}\)"):
            with jobs.job_lock(lock):
                pass
    with jobs.job_lock(lock):  # released when the holder is done
        pass
