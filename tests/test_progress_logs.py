"""Progress in log files: plain lines every few percent, no carriage returns; one line per CHGNet notice."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from e3relax.progress import LineProgress, attach_progress, progress


def test_line_progress_writes_a_line_every_ten_percent(caplog):
    with caplog.at_level(logging.INFO, logger="e3relax.progress"):
        bar = progress(total=200, desc="convert", unit="pair")  # stderr is captured: not a terminal
        assert isinstance(bar, LineProgress)
        for _ in range(200):
            bar.update(1)
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert 9 <= len(lines) <= 11
    assert lines[-1].startswith("convert: 200/200 pair (100%)")
    assert not any("\r" in line for line in lines)


def test_line_progress_time_trigger_and_initial(caplog, monkeypatch):
    import e3relax.progress as P

    clock = iter(float(t) for t in range(0, 1000, 40))
    monkeypatch.setattr(P.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="e3relax.progress"):
        bar = LineProgress(total=10_000, desc="train", unit="steps", initial=100)
        bar.update(1)  # 40 s later: a line although far below 10%
    assert caplog.records and "101/10000 steps" in caplog.records[-1].getMessage()


def test_ignite_engine_progress_is_plain_lines(caplog):
    from ignite.engine import Engine

    engine = Engine(lambda e, b: None)
    attach_progress(engine, "evaluate")
    with caplog.at_level(logging.INFO, logger="e3relax.progress"):
        engine.run(range(30), max_epochs=1)
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs and msgs[-1].startswith("evaluate: 30/30 batches (100%)")


def test_predict_log_file_has_no_carriage_returns(tmp_path):
    from ase.build import bulk
    from ase.io import write

    write(tmp_path / "NaCl.cif", bulk("NaCl", "rocksalt", a=5.6))
    log = tmp_path / "predict.log"
    with log.open("w") as fh:
        proc = subprocess.run([sys.executable, "-m", "e3relax.cli.main", "predict", "NaCl.cif", "--checkpoint",
                               "pnictides", "--no-ensemble", "--out", "out"], cwd=tmp_path, stdout=fh,
                              stderr=subprocess.STDOUT, timeout=120)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "\r" not in text
    assert "predict: 1/1 files (100%)" in text


def test_chgnet_announces_itself_once_and_warnings_are_one_line(capsys, caplog):
    pytest.importorskip("chgnet")
    import warnings

    from ase.build import bulk

    from e3relax import chgnet_tools

    atoms = [bulk("Si", "diamond", a=5.43), bulk("NaCl", "rocksalt", a=5.6)]
    with caplog.at_level(logging.INFO, logger="e3relax.chgnet_tools"):
        chgnet_tools.chgnet_energy_per_atom(atoms)
        chgnet_tools.chgnet_energy_per_atom(atoms)
        with chgnet_tools._one_line_per_notice():
            for k in range(33):
                warnings.warn(f"logm result may be inaccurate, approximate err = {k}e-13", RuntimeWarning)
        with chgnet_tools._one_line_per_notice():
            warnings.warn("logm result may be inaccurate, approximate err = 1e-12", RuntimeWarning)
    assert "CHGNet will run" not in capsys.readouterr().out
    assert chgnet_tools._calculator() is chgnet_tools._calculator()
    assert sum("will run on" in r.getMessage() for r in caplog.records) <= 1
    assert sum("logm" in r.getMessage() for r in caplog.records) <= 1
