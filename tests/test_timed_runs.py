"""Timed side-by-side runs: launch or resume, time to reach a target, curve figures."""
from __future__ import annotations

import subprocess

import pytest

from e3relax.benchmark import timed_runs as T


def test_time_to_reach_is_the_first_validation_at_or_below_the_target():
    recs = [{"cpu_s": 10.0, "mae_pos": 0.5}, {"cpu_s": 20.0, "mae_pos": 0.3}, {"cpu_s": 30.0, "mae_pos": 0.2}]
    assert T.time_to_reach(recs, 0.3) == 20.0 and T.time_to_reach(recs, 0.1) is None


def test_launch_starts_new_runs_resumes_stopped_ones_and_skips_finished(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "Popen", lambda cmd, **kw: calls.append(cmd) or "proc")
    assert T.launch("a", "cfg.yaml", {"optim.lr": 5e-4, "model.prior": None, "log.figures": False}, tmp_path) == "proc"
    assert calls[-1][-5:] == ["--run-dir", str(tmp_path / "a"), "optim.lr=0.0005", "model.prior=null",
                              "log.figures=false"]
    (tmp_path / "a" / "checkpoints").mkdir(parents=True)
    (tmp_path / "a" / "checkpoints" / "last.pt").write_bytes(b"")
    T.launch("a", "cfg.yaml", {}, tmp_path)
    assert calls[-1][-2:] == ["--resume", str(tmp_path / "a")]
    (tmp_path / "a.summary.json").write_text("{}")
    assert T.launch("a", "cfg.yaml", {}, tmp_path) is None and len(calls) == 2


def test_curves_figure_uses_a_log_axis_only_when_values_span_a_decade(tmp_path, monkeypatch):
    import matplotlib.axes

    scales = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_yscale", lambda self, s, **kw: scales.append(s))
    curves = {"run": [{"cpu_s": 60.0 * k, "mae_pos": 0.5 - 0.01 * k, "shape_dev": 40.0, "mae_vol": 300.0 / k}
                      for k in range(1, 6)]}
    lines = {"Dummy": {"mae_pos": 0.6, "shape_dev": 50.0, "mae_vol": 3000.0}}
    path = T.plot_curves(curves, lines, tmp_path / "c.png")
    assert path.stat().st_size > 0
    assert scales == ["log"]  # the volume panel spans 60..3000; coordinates and shape do not


@pytest.mark.parametrize("metric", [m for m, _ in T.METRICS])
def test_every_plotted_metric_is_kept_by_the_validation_history(metric):
    from e3relax.engine.budget import ValidationHistory

    assert metric in ValidationHistory.METRICS
