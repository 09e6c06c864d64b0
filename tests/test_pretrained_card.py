"""The model card of a pretrained ensemble states each member's training and the test errors
beside the Dummy and the prior, with the goal verdicts computed from the numbers given."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "pretrained_card", Path(__file__).resolve().parents[1] / "benchmarks" / "pretrained_card.py")
card = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(card)

REFS = {"Dummy": {"mae_pos": 0.6, "shape_dev": 20.0, "mae_vol": 20.0},
        "atomic-volume prior": {"mae_pos": 0.58, "shape_dev": 18.0, "mae_vol": 7.0}}


def test_ratios_and_goal_verdicts_follow_the_numbers():
    ens = {"mae_pos": 0.45, "shape_dev": 13.0, "mae_vol": 10.0}
    rows = card.test_lines("srnbh", {"srnbh_s0": ens}, ens, REFS)
    ensemble = next(r for r in rows if r.startswith("| ensemble"))
    assert "0.4500 | 0.75" in ensemble and "13.00 | 0.65" in ensemble and "10.00 | 0.50" in ensemble
    verdict = rows[-3]
    # srnbh goals: coordinates <= 80%, shape and volume <= 60% of the Dummy's
    assert "coordinates at most 80% of the Dummy's: met (75%)" in verdict
    assert "shape at most 60% of the Dummy's: missed (65%)" in verdict
    assert "volume at most 60% of the Dummy's: met (50%)" in verdict
    assert any(r.startswith("| atomic-volume prior | 0.5800 | 0.97") for r in rows)
    assert rows[-1] == ("Below the atomic-volume prior: coordinates yes (0.4500 against 0.5800); shape yes "
                        "(13.00 against 18.00); volume no (10.00 against 7.00).")


def test_training_rows_say_why_each_member_stopped():
    recs = [{"iteration": 1600, "time_used_s": 441.0, "best_val": 0.6081, "converged": True,
             "time_limit_hit": False, "budget_min": 30.0},
            {"iteration": 9000, "time_used_s": 2400.0, "best_val": 0.3512, "converged": False,
             "time_limit_hit": True, "budget_min": 40.0, "init_from": "/x/pnictides_s1.pt"},
            {}]
    rows = card.training_lines(["a_s0", "a_s1", "a_s2"], recs)
    assert "| a_s0 | 1600 | 0.12 | 0.6081 | early stop" in rows[2] and "| yes |" in rows[2]
    assert "hit the cap of 40 CPU-min" in rows[3] and "| no | pnictides_s1.pt |" in rows[3]
    assert rows[4] == "| a_s2 | ? | ? | ? | no record | ? | ? |"
