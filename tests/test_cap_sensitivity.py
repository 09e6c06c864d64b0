"""benchmarks/cap_sensitivity.py: two comparisons that differ only in their cap, run by run, with
the changes and the ranking computed from the records; anything else that differs is refused."""
from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
spec = importlib.util.spec_from_file_location("cap_sensitivity", BENCH / "cap_sensitivity.py")
cap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cap)

BUDGET = {"steps": 1_000_000, "eval_every": 250, "wall_s": None, "batch_size": 16, "max_val_structures": 200,
          "patience": 10}


def _run(steps, best, pos, shape, vol, hit=False):
    return {"steps": steps, "time_used_s": steps * 0.36, "time_clock": "cpu", "wall_budget_hit": hit,
            "best_val": best, "metrics": {"mae_pos": pos, "shape_dev": shape, "mae_vol": vol}}


def _record(cpu_s, runs):
    models = {}
    for (key, label, seed), rec in runs.items():
        models.setdefault(key, {"label": label, "seeds": {}})["seeds"][seed] = rec
    return {"meta": {"dataset": {"name": "toy", "folder": "/somewhere"}, "budget": {**BUDGET, "cpu_s": cpu_s}},
            "models": models}


SMALL = _record(3600, {("a", "A", "0"): _run(10000, 0.40, 0.40, 40.0, 40.0, hit=True),
                       ("b", "B", "0"): _run(5000, 0.38, 0.38, 30.0, 30.0),
                       ("b", "B", "1"): _run(5000, 0.39, 0.39, 31.0, 31.0)})
LARGE = _record(7200, {("a", "A", "0"): _run(20000, 0.36, 0.36, 30.0, 44.0),
                       ("b", "B", "0"): _run(6000, 0.38, 0.38, 30.0, 30.0),
                       ("c", "C", "0"): _run(6000, 0.30, 0.30, 10.0, 10.0)})


def test_each_paired_run_with_its_change_and_nothing_unpaired():
    table = cap.run_table(SMALL, LARGE)
    assert ("| A | 0 | 1 CPU-h, patience 10 | 10,000 | 60.0 | time cap (60 CPU-min) | 0.4000 | 0.4000 | 40.0000 "
            "| 40.0000 |") in table
    assert "| A | 0 | 2 CPU-h, patience 10 | 20,000 | 120.0 | early stop" in table
    assert "| A | 0 | change |  |  |  | -10.0% | -10.0% | -25.0% | +10.0% |" in table
    assert "| B | 0 | change |  |  |  | +0.0% | +0.0% | +0.0% | +0.0% |" in table
    assert "| C |" not in table and "| B | 1 |" not in table  # only runs both records hold


def test_ranking_uses_the_paired_seeds_and_says_whether_it_moved():
    text, same = cap.ranking(SMALL, LARGE)
    assert not same and "1 CPU-h, patience 10: B 0.3800, A 0.4000" in text
    assert "2 CPU-h, patience 10: A 0.3600, B 0.3800" in text
    text, same = cap.ranking(SMALL, SMALL | {"meta": {**SMALL["meta"], "budget": {**BUDGET, "cpu_s": 7200}}})
    assert same and text.endswith("the order is the same under both budgets")


def test_other_differences_and_swapped_caps_are_refused_with_one_line(tmp_path, capsys):
    paths = {}
    other = copy.deepcopy(LARGE)
    other["meta"]["budget"]["max_val_structures"] = 500
    nostop = copy.deepcopy(LARGE)
    nostop["meta"]["budget"].update(patience=None, lr_schedule="cosine")  # other stopping rules may be compared
    moved = copy.deepcopy(LARGE)
    moved["meta"]["dataset"]["folder"] = "/elsewhere"  # where the data lies does not count
    for name, rec in {"small": SMALL, "large": LARGE, "other": other, "moved": moved, "nostop": nostop}.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(rec))
    (tmp_path / "bad.json").write_text("[1, 2]")

    assert cap.main([str(paths["small"]), str(paths["moved"]), "--out", str(tmp_path / "t.md")]) == 0
    assert "| A | 0 | change |" in (tmp_path / "t.md").read_text()
    assert cap.main([str(paths["small"]), str(paths["nostop"])]) == 0
    assert "| A | 0 | 2 CPU-h, no early stop, cosine for all | 20,000 |" in capsys.readouterr().out
    capsys.readouterr()
    for args, reason in [((paths["small"], paths["other"]), "differs from"),
                         ((paths["large"], paths["small"]), "not smaller"),
                         ((tmp_path / "bad.json", paths["large"]), "not a compare_baselines.py results.json"),
                         ((tmp_path / "missing.json", paths["large"]), "cannot read")]:
        assert cap.main([str(a) for a in args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and reason in err
        if args[1] == paths["other"]:
            assert err.endswith("in more than its stopping rules (max_val_structures)")


def test_no_common_run_is_an_error():
    lone = _record(7200, {("z", "Z", "0"): _run(1, 0.1, 0.1, 1.0, 1.0)})
    with pytest.raises(cap.RecordError, match="no \\(model, seed\\) run in common"):
        cap.report(SMALL, lone)
