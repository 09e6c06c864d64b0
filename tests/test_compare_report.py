"""What a comparison tells its reader: the plan and progress lines, the matching footnote, and figures
whose axes are set by the bulk of the data."""
from __future__ import annotations

import numpy as np
import pytest

from e3relax.benchmark import figures, tables
from e3relax.benchmark.progress import Progress, estimate_chgnet_s, estimate_run_s


def _results(match: dict) -> dict:
    rec = {"metrics": {"mae_pos": 0.1}, "match": match}
    return {"models": {"egnn": {"label": "EGNN", "ablation": False, "seeds": {"0": rec}}},
            "dummy": {"match_strict": 0.5}, "chgnet": None}


def test_footnote_names_timed_out_and_degenerate_pairs():
    assert tables.match_footnote(_results({"match_timeouts": 0, "degenerate_cells": 0})) == ""
    note = tables.match_footnote(_results({"match_timeouts": 1, "degenerate_cells": 2}))
    assert "EGNN seed 0: 1" in note and "EGNN seed 0: 2" in note
    assert "time limit" in note and "degenerate" in note and "unmatched" in note


def test_efficiency_table_counts_cpu_hours_and_cap_hits():
    def rec(steps, cpu_s, hit, clock="cpu"):
        return {"parameters": 1000, "train_seconds": 2 * cpu_s, "time_used_s": cpu_s, "time_clock": clock,
                "wall_budget_hit": hit, "steps": steps, "val_history": [[100, 0.5], [200, 0.4]],
                "timing": {"batch1_ms": 1.0, "batched_ms": 0.5}}

    results = {"models": {"egnn": {"label": "EGNN", "seeds": {"0": rec(100, 1800.0, False), "1": rec(90, 3600.0, True)}},
                          "painn": {"label": "PaiNN", "seeds": {"0": rec(50, 10.0, True, clock="wall")}}}}
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in
            tables._efficiency_table(results).splitlines()[2:]}
    assert rows["EGNN"][3] == "1.50" and rows["EGNN"][4] == "100/90" and rows["EGNN"][-1].strip(" |") == "1/2"
    assert rows["EGNN"][2] == "5400"  # wall seconds, mean over seeds
    assert rows["PaiNN"][3] == "–" and rows["PaiNN"][-1].strip(" |") == "1/1"  # a wall-clock budget has no CPU figure
    # a seed that resumed a run whose earlier wall time is unknown makes the mean a lower bound
    results["models"]["egnn"]["seeds"]["1"]["train_seconds_partial"] = True
    assert tables._efficiency_table(results).splitlines()[2].split(" | ")[2] == "≥5400"
    del results["models"]["egnn"]["seeds"]["1"]["train_seconds_partial"]
    results["models"]["egnn"]["seeds"]["1"]["resumed"] = True  # a record from before the flag: resumed is enough
    assert tables._efficiency_table(results).splitlines()[2].split(" | ")[2] == "≥5400"


def test_runs_table_says_what_stopped_each_run():
    budget = {"steps": 10000, "cpu_s": 2700.0, "wall_s": None, "patience": 10}
    assert tables.stopped_by({"steps": 400, "wall_budget_hit": True}, budget) == "time cap (45 CPU-min)"
    assert tables.stopped_by({"steps": 10000, "wall_budget_hit": False}, budget) == "step cap"
    assert tables.stopped_by({"steps": 400}, budget).startswith("early stop (10 validations")
    assert tables.stopped_by({"steps": 400}, {**budget, "patience": None}) == "end of the budget"
    diverged = {"steps": 3423, "stopped_nonfinite": {"iteration": 3423, "saved_iteration": 3250}}
    assert tables.stopped_by(diverged, budget) == "diverged (non-finite loss at step 3,423)"
    rewound = {"steps": 9000, "rewinds": [{"iteration": 3423, "resumed_from": 3250, "lr": 5e-4}]}
    assert tables.stopped_by(rewound, budget) == ("early stop (10 validations without improvement), "
                                                  "after 1 rewind (non-finite at step 3,423)")
    rec = {"steps": 1500, "best_step": 500, "time_used_s": 600.0, "time_clock": "cpu", "wall_budget_hit": False}
    results = {"meta": {"budget": budget},
               "models": {"e3relax": {"label": "E3Relax", "seeds": {"1": {**rec, "wall_budget_hit": True},
                                                                     "0": {**rec, "converged": True}}}}}
    lines = tables._runs_table(results).splitlines()[2:]
    assert lines[0] == "| E3Relax | 0 | 1,500 | 500 | 10.0 | early stop (10 validations without improvement) | yes |"
    assert lines[1].endswith("| time cap (45 CPU-min) | no |")  # seeds in order


def test_plan_and_progress_lines():
    class Run:
        label = "PaiNN"

    p = Progress(4, estimate_run_s(60.0, 32), estimate_chgnet_s(6), t_start=0.0)
    plan = p.plan([Run(), Run()], [0, 1], 32, 6, "60 s of training wall time")
    assert "4 run(s)" in plan and "CHGNet + FIRE on 6" in plan and "expected about" in plan
    assert estimate_chgnet_s(6, jobs=2) == estimate_chgnet_s(3) == estimate_chgnet_s(6) / 2
    assert "no time budget" in Progress(4, estimate_run_s(None, 32), 0.0, 0.0).plan([Run()], [0], 32, 0, "")
    p.skip()
    line = p.step()
    assert line.startswith("2/4 runs done (50%)") and "left" in line
    two = Progress(4, 100.0, 0.0, t_start=0.0, jobs=2)  # two at a time: two waves of 100 s
    plan = two.plan([Run(), Run()], [0, 1], 32, 0, "b")
    assert "2 runs at a time" in plan and "about 3.3 min in all" in plan


def test_time_left_follows_what_finished_runs_cost():
    """A run resumed near its end must not make the rest look short: the estimate uses each finished
    run's own training seconds (earlier sessions included), capped by the budget per run."""
    class Run:
        label = "E3Relax"

    p = Progress(6, 7200.0, 0.0, t_start=0.0, jobs=2)
    p.skip({"time_used_s": 3585.0})  # finished in an earlier session
    plan = p.plan([Run()] * 3, [0, 1], 32, 0, "b")
    assert "1 of them finished earlier and are kept" in plan
    assert "about 180.0 min for the 5 left" in plan  # 5 left, 3 waves of the first run's 1 h (+15 s testing)
    line = p.step({"time_used_s": 3585.0, "resumed": True})  # resumed: cost its whole training, not this session's
    assert line.startswith("2/6 runs done (33%)") and "about 120.0 min left" in line
    p.step({"time_used_s": 1e9})  # a record over the cap: the cap bounds the estimate
    assert p._per_run() == 3600.0  # median of 3600, 3600, 1e9 + 15
    capped = Progress(2, 100.0, 0.0, t_start=0.0)
    capped.step({"time_used_s": 1e9})
    assert capped._per_run() == 100.0


def _capture(monkeypatch):
    """Keep the figure objects figures._save would close."""
    kept = []

    def save(plt, fig, path):
        fig.canvas.draw()
        kept.append(fig)
        return path

    monkeypatch.setattr(figures, "_save", save)
    return kept


def test_violin_axis_follows_the_bulk_not_one_outlier(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    per_model = {name: rng.uniform(0.05, 0.4, 60) for name in ("Dummy", "PaiNN", "EGNN")}
    per_model["GotenNet"] = np.append(rng.uniform(0.05, 0.4, 59), 9.0)
    kept = _capture(monkeypatch)
    figures.violin(per_model, tmp_path / "v.png")
    ax = kept[0].axes[0]
    lo, hi = ax.get_ylim()
    assert lo == 0.0 and 0.4 <= hi < 1.0  # the 9 A outlier does not set the axis
    markers = [ln for ln in ax.lines if ln.get_marker() == "^"]
    assert markers and float(markers[0].get_xdata()[0]) == 4.0  # marked on the GotenNet violin
    assert any("max 9" in t.get_text() for t in ax.texts)


def test_robust_upper_keeps_every_value_when_there_is_no_outlier():
    vals = [np.linspace(0.1, 1.0, 50), np.linspace(0.2, 0.8, 50)]
    assert figures.robust_upper(vals) == pytest.approx(1.05)


def test_learning_curves_draw_dummy_and_a_single_validation(monkeypatch, tmp_path):
    kept = _capture(monkeypatch)
    hist = {"E3Relax": {0: [(50, 0.30), (100, 0.25), (150, 0.2)]}, "PaiNN": {0: [(50, 0.35)]}}
    figures.learning_curves(hist, 16, tmp_path / "lc.png", dummy=0.4)
    ax = kept[0].axes[0]
    single = [ln for ln in ax.lines if ln.get_label() == "PaiNN"][0]
    assert single.get_marker() == "o" and single.get_markersize() >= 4
    dummy = [ln for ln in ax.lines if ln.get_label().startswith("Dummy")][0]
    assert np.allclose(dummy.get_ydata(), 0.4)
    assert ax.get_ylim()[1] >= 0.4
