"""The model card of a pretrained ensemble states each member's training and the test errors
beside the Dummy and the prior, with the goal verdicts computed from the numbers given."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)  # train_pretrained imports pretrained_card by name
    spec.loader.exec_module(module)
    return module


card = _load("pretrained_card")

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


def test_card_counts_the_training_the_members_continued():
    recs = [{"iteration": 9000, "time_used_s": 3600.0, "best_val": 0.35, "converged": False, "time_limit_hit": True,
             "budget_min": 60.0, "init_from": "pnictides_s0.pt", "training": {"earlier_time_used_s": 4800.0}},
            {"iteration": 8000, "time_used_s": 1800.0, "best_val": 0.36, "converged": False, "time_limit_hit": False,
             "init_from": "pnictides_s1.pt", "training": {"earlier_time_used_s": 4500.0}}]
    assert "| pnictides_s0.pt, trained 1.33 CPU-hours before |" in card.training_lines(["a", "b"], recs)[2]
    assert card.training_hours(recs) == "1.50 CPU-hours in this round, 4.08 in all with the training the members continued"
    recs[1]["training"] = {}
    assert card.training_hours(recs) == "1.50 CPU-hours in this round, after training of unrecorded length"
    assert card.training_hours([{"time_used_s": 720.0}]) == "0.20 CPU-hours in all"


def test_lineage_is_read_once_so_a_second_export_does_not_count_twice(tmp_path):
    train_pretrained = _load("train_pretrained")
    init = tmp_path / "member.pt"
    torch.save({"format_version": 1, "config": {}, "training": {"time_used_s": 1200.0}}, init)
    run = tmp_path / "run"
    assert train_pretrained.lineage(run, str(init)) == {"init_from": "member.pt", "earlier_time_used_s": 1200.0}
    # the export then overwrites the init file with this member (its own time added) ...
    torch.save({"format_version": 1, "config": {}, "training": {"time_used_s": 5000.0}}, init)
    # ... and exporting again still counts 1200 s before this run
    assert train_pretrained.lineage(run, str(init))["earlier_time_used_s"] == 1200.0
    assert json.loads((run / "lineage.json").read_text())["earlier_time_used_s"] == 1200.0
    legacy = tmp_path / "legacy.pt"  # a file from before members recorded their training time
    torch.save({"format_version": 1, "config": {}}, legacy)
    assert train_pretrained.lineage(tmp_path / "r2", str(legacy), init_cpu_hours=1.25)["earlier_time_used_s"] == 4500.0
    assert train_pretrained.lineage(tmp_path / "r3", str(legacy))["earlier_time_used_s"] is None
    assert train_pretrained.lineage(tmp_path / "r4", None) == {"init_from": None, "earlier_time_used_s": None}


def test_a_stopped_member_says_how_to_continue_it(monkeypatch, capsys):
    from e3relax.errors import Interrupted

    train_pretrained = _load("train_pretrained")

    def stopped(*args, **kwargs):
        raise Interrupted(15, "SIGTERM: stopped at iteration 8444; saved RUN/checkpoints/last.pt; continue with: e3relax ...")

    monkeypatch.setattr(train_pretrained, "train", stopped)
    argv = ["train", "pnictides", "--seed", "2", "--canonical-frame", "--budget-min", "120", "--no-export"]
    assert train_pretrained.main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert err == ("train_pretrained: SIGTERM: stopped at iteration 8444; saved RUN/checkpoints/last.pt; continue with: "
                   "python benchmarks/train_pretrained.py train pnictides --seed 2 --canonical-frame --budget-min 120 "
                   "--no-export --resume")


def test_a_lower_peak_rate_anneals_a_continued_member_and_the_card_says_so(monkeypatch):
    train_pretrained = _load("train_pretrained")
    recipe = train_pretrained.run_config("pnictides", 1)
    cfg = train_pretrained.run_config("pnictides", 1, budget_min=25, patience=40,
                                      init_from="/x/pnictides_s1.pt", canonical=True, lr=3e-4)
    assert cfg["optim"]["lr"] == 3e-4 and recipe["optim"]["lr"] == 1e-3
    assert cfg["init_from"] == "/x/pnictides_s1.pt" and cfg["schedule"]["time_limit_s"] == 1500
    assert cfg["schedule"]["early_stop_patience"] == 40
    assert cfg["data"]["train"].endswith("pnictides_canonical/train.lmdb")
    assert train_pretrained.member_command("pnictides", 25, True, continued=True, lr=3e-4) == (
        "OMP_NUM_THREADS=1 python benchmarks/train_pretrained.py train pnictides --seed S "
        "--init-from lib/pretrained/pnictides_sS.pt --lr 0.0003 --budget-min 25 --canonical-frame")
    assert train_pretrained.member_command("srnbh", None, False, lr=1e-3) == (
        "OMP_NUM_THREADS=1 python benchmarks/train_pretrained.py train srnbh --seed S")
    seen = {}
    monkeypatch.setattr(train_pretrained, "train", lambda *a: seen.setdefault("args", a))
    assert train_pretrained.main(["train", "pnictides", "--seed", "1", "--lr", "3e-4", "--no-export"]) == 0
    assert seen["args"][-1] == 3e-4


def test_a_shipped_member_carries_its_record_for_the_card_when_its_run_folder_is_gone(tmp_path, monkeypatch):
    train_pretrained = _load("train_pretrained")
    monkeypatch.setattr(train_pretrained, "WORK", tmp_path / "work")
    monkeypatch.setattr(train_pretrained, "OUT", tmp_path / "shipped")
    (tmp_path / "shipped").mkdir()
    record = {"iteration": 900, "time_used_s": 600.0, "best_val": 0.31, "converged": True,
              "val_records": [{"iteration": 250, "cpu_s": 60.0, "mae_pos": 0.33}], "canonical_frame": True}
    member = tmp_path / "shipped" / "pnictides_s1.pt"
    torch.save({"format_version": 1, "config": {}, "predict": {"frame": "canonical"},
                "training": {"time_used_s": 4200.0, "earlier_time_used_s": 3600.0, "record": record}}, member)
    got = train_pretrained.member_history(member)
    assert got["val_records"] == record["val_records"] and got["best_val"] == 0.31 and got["converged"]
    assert got["training"] == {"time_used_s": 4200.0, "earlier_time_used_s": 3600.0}  # the record is not repeated
    # the run folder, while it exists, is what the card reads
    run = tmp_path / "work" / "pnictides_s1"
    run.mkdir(parents=True)
    (run / "trained.json").write_text(json.dumps({**record, "best_val": 0.30}))
    assert train_pretrained.member_history(member)["best_val"] == 0.30
    # the training set of a member whose run folder is gone is the one in the frame it records
    assert train_pretrained.train_lmdb("pnictides", 1) == tmp_path / "work" / "data" / "pnictides_canonical" / "train.lmdb"
    assert train_pretrained.train_lmdb("pnictides", 7) == tmp_path / "work" / "data" / "pnictides" / "train.lmdb"
