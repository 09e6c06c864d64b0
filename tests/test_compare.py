"""benchmarks/compare_baselines.py end to end on a tiny generated poscar_pairs dataset, plus its pieces.

The end-to-end test converts 24 generated pairs on the fly, trains two tiny models and the three
E3Relax ablations for a few steps, runs CHGNet + FIRE on two structures, and checks every output
file and table row.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from data_fixtures import poscar_text, random_atoms, relax_like

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "compare_baselines.py"
CONFIGS = REPO / "benchmarks" / "configs"

TINY = {
    "e3relax_cpu.yaml": {"model": {"name": "e3relax", "hidden_channels": 8, "num_layers": 2, "num_rbf": 8,
                                   "rbf_cutoff": 10.0},
                         "loss": {"name": "layerwise", "pos_term": "euclidean"}, "optim": {"lr": 1.0e-3}},
    "painn_cpu.yaml": {"model": {"name": "painn", "hidden_channels": 8, "num_layers": 1, "num_rbf": 8,
                                 "cutoff": 6.0, "displacement_head": {"name": "gated_displacement"},
                                 "lattice_head": {"name": "deeprelax_lattice"}},
                       "loss": {"name": "layerwise", "pos_term": "euclidean"}, "optim": {"lr": 1.0e-3}},
}


def _write_dataset(root: Path, n: int = 24, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for side in ("unrelaxed", "relaxed"):
        (root / side).mkdir(parents=True)
    for k in range(n):
        a = random_atoms(rng, "NaCl" if k % 2 else "MgO", n=2 + k % 3)
        (root / "unrelaxed" / f"POSCAR_s{k:02d}").write_text(poscar_text(a))
        (root / "relaxed" / f"POSCAR_s{k:02d}").write_text(poscar_text(relax_like(a, rng)))


def _write_configs(folder: Path) -> None:
    folder.mkdir()
    for name, cfg in TINY.items():
        (folder / name).write_text(yaml.safe_dump(cfg))
    for path in [CONFIGS / "e3relax.yaml", *sorted(CONFIGS.glob("e3relax_no_*.yaml"))]:
        shutil.copy(path, folder / path.name)


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    pytest.importorskip("chgnet")
    tmp = tmp_path_factory.mktemp("compare")
    _write_dataset(tmp / "src")
    _write_configs(tmp / "configs")
    out = tmp / "out"
    cmd = [sys.executable, str(SCRIPT), "--data", str(tmp / "src"), "--layout", "poscar_pairs",
           "--data-cache", str(tmp / "cache"), "--split-ratio", "2:1:1", "--models", "e3relax,painn",
           "--ablations", "--config-dir", str(tmp / "configs"), "--steps", "4", "--eval-every", "2",
           "--batch-size", "4", "--seeds", "0,1", "--chgnet", "2", "--chgnet-max-steps", "5",
           "--timing-structures", "2", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg",
                               "HOME": str(tmp)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_compare_end_to_end_files(compare_run):
    out, stdout = compare_run
    for name in ("results.md", "results.csv", "results.json", "results_per_seed.csv",
                 "figures/violin_coord_mae.png", "figures/learning_curves.png", "per_structure/dummy.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for key in ("e3relax", "painn", "e3relax_no_lattice_nodes", "e3relax_no_refinement", "e3relax_no_self_image"):
        assert (out / "figures" / f"error_distribution_{key}.png").is_file(), key
        for seed in (0, 1):
            run = out / "runs" / f"{key}_s{seed}"
            assert list((run / "tb").glob("events.out.tfevents.*")), f"no TensorBoard events in {run}"
            assert (out / "per_structure" / f"{key}_s{seed}.csv").is_file()
    assert "| E3Relax |" in stdout and "| Dummy |" in stdout  # the table is printed
    assert "Summary (test split, mean over seeds):" in stdout and "is best with" in stdout
    # a run in this process shows its progress too: each validation, nothing else of the engine
    assert "e3relax.engine.trainer: iteration 2: val mae_pos" in stdout
    assert not any(" e3relax.engine." in line and "e3relax.engine.trainer" not in line and " INFO " in line
                   for line in stdout.splitlines())


def test_compare_tables_rows(compare_run):
    out, _ = compare_run
    md = (out / "results.md").read_text()
    for row in ("| E3Relax |", "| PaiNN |", "| Dummy |", "| Improvement (E3Relax vs second best) |",
                "| CHGNet + FIRE (first 2 test structures)† |", "| E3Relax w/o lattice nodes |",
                "| E3Relax w/o refinement |", "| E3Relax w/o self-connecting edges |", "## Ablations (paper Table 3)",
                "## Energy check (paper Fig. 5)", "| E3Relax → CHGNet + FIRE |", "| Unrelaxed input |",
                "| Atomic-volume prior |", "| Coord. MAE vs Dummy | Coord. MAE vs prior |"):
        assert row in md, row
    assert " ± " in md  # spread over the two seeds
    with (out / "results.csv").open() as fh:
        rows = {r["key"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"e3relax", "painn", "e3relax_no_lattice_nodes", "e3relax_no_refinement",
                         "e3relax_no_self_image", "dummy", "prior", "improvement", "chgnet_fire"}
    assert rows["e3relax"]["num_seeds"] == "2" and rows["e3relax_no_refinement"]["table"] == "table3"
    with (out / "results_per_seed.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 10  # 5 models x 2 seeds


def test_compare_json_consistent(compare_run):
    out, _ = compare_run
    doc = json.loads((out / "results.json").read_text())
    sizes = doc["meta"]["split_sizes"]
    assert sum(sizes.values()) == 24 and doc["meta"]["test_structures"] == sizes["test"]
    # trained on pairs in their own cells, so the test structures are predicted in their own cells
    assert doc["meta"]["canonical_cell"] is False and doc["meta"]["symmetry"] is True
    rec = doc["models"]["e3relax"]["seeds"]["0"]
    assert rec["steps"] == 4 and rec["parameters"] > 0 and rec["timing"]["batch1_ms"] > 0
    assert [h[0] for h in rec["val_history"]] == [2, 4]
    # the test metrics in the JSON are the means of the per-structure CSV
    with (out / "per_structure" / "e3relax_s0.csv").open() as fh:
        col = [float(r["mae_pos"]) for r in csv.DictReader(fh)]
    assert len(col) == sizes["test"] and math.isclose(np.mean(col), rec["metrics"]["mae_pos"], rel_tol=1e-4)
    # Dummy's coordinate MAE equals the mean displacement of the labels from the input
    assert doc["dummy"]["mae_pos"] > 0
    with (out / "per_structure" / "prior.csv").open() as fh:  # the prior row: its own per-structure errors
        prior = [float(r["mae_vol"]) for r in csv.DictReader(fh)]
    assert math.isclose(np.mean(prior), doc["prior"]["mae_vol"], rel_tol=1e-4)
    ch = doc["chgnet"]
    assert ch["num_structures"] == 2 and all(s <= 5 for s in doc["energy"]["per_structure"]["steps_from_unrelaxed"])
    # the CHGNet rows use E3Relax's seed with the best validation error, and name it
    seeds = doc["models"]["e3relax"]["seeds"]
    best = min(seeds, key=lambda k: (seeds[k]["best_val"], k))
    assert ch["e3relax_seed"] == best and ch["rows"][1][0] == f"E3Relax (seed {best})"


def test_improvement_row_uses_best_other_baseline():
    from e3relax.benchmark.tables import improvement

    agg = lambda c, m: {"mae_pos": (c, math.nan, 1), "shape_dev": (1.0, math.nan, 1), "mae_vol": (1.0, math.nan, 1),
                        "match_strict": (m, math.nan, 1), "match_loose": (m, math.nan, 1), "spg_match": (m, math.nan, 1)}
    rows = [("e3relax", "E3Relax", agg(0.5, 0.6)), ("painn", "PaiNN", agg(1.0, 0.5)),
            ("egnn", "EGNN", agg(0.8, 0.3)), ("relax_net", "RelaxNet", agg(0.1, 0.9))]
    pct, who = improvement(rows)
    assert who["mae_pos"] == "EGNN" and math.isclose(pct["mae_pos"], 37.5)  # RelaxNet is E3Relax itself
    assert who["match_strict"] == "PaiNN" and math.isclose(pct["match_strict"], 10.0)  # percentage points


def test_gain_table_against_dummy_and_prior_names_models_behind_the_prior():
    from e3relax.benchmark.tables import _gain_section, gains

    agg = {"mae_pos": (0.3, math.nan, 1), "shape_dev": (40.0, math.nan, 1), "mae_vol": (20.0, math.nan, 1)}
    g = gains(agg, {"mae_pos": 0.6, "shape_dev": 50.0, "mae_vol": 10.0})
    assert math.isclose(g["mae_pos"], 50.0) and math.isclose(g["shape_dev"], 20.0) and math.isclose(g["mae_vol"], -100.0)
    rec = lambda c, v: {"metrics": {"mae_pos": c, "shape_dev": 40.0, "mae_vol": v}, "match": {}}
    results = {"models": {"e3relax": {"label": "E3Relax", "ablation": False, "seeds": {"0": rec(0.3, 5.0)}},
                          "painn": {"label": "PaiNN", "ablation": False, "seeds": {"0": rec(0.5, 20.0)}}},
               "dummy": {"mae_pos": 0.6, "shape_dev": 50.0, "mae_vol": 40.0},
               "prior": {"mae_pos": 0.45, "shape_dev": 45.0, "mae_vol": 10.0}}
    md = "\n".join(_gain_section(results, False))
    assert "| E3Relax | +50.0% | +33.3% | +20.0% | +11.1% | +87.5% | +50.0% |" in md
    assert "Not better than the prior (so nothing learned there beyond the volume): PaiNN: Coord. MAE, Volume MAE." in md
    from e3relax.benchmark.tables import plain_summary

    text = plain_summary(results)
    assert "Coord. MAE (Å): E3Relax is best with 0.3, 50% below the Dummy (0.6), 33% below the prior (0.45)." in text
    assert "Volume MAE (Å³): E3Relax is best with 5, 88% below the Dummy (40), 50% below the prior (10)." in text
    del results["prior"]  # an older results.json: no prior row, no gain table
    assert _gain_section(results, False) == []


def test_convergence_flag():
    from e3relax.benchmark.runner import convergence

    h = lambda *v: [(50 * (i + 1), x) for i, x in enumerate(v)]
    assert not convergence(h(1.0, 0.9, 0.85, 0.8))["converged"]  # still improving
    assert convergence(h(1.0, 0.8, 0.81, 0.805))["converged"]  # second half no better
    assert convergence(h(1.0, 0.8, 0.795, 0.797))["converged"]  # under 1% better: plateau
    assert not convergence(h(1.0, 0.8, 0.7, 0.72))["converged"]  # a noisy last value is not a plateau
    assert not convergence(h(1.0, 0.8, 0.81))["converged"]  # too few evaluations to tell
    assert not convergence([])["converged"]
    assert convergence(h(1.0, 0.8, 0.7, 0.72))["best_step"] == 150


def test_ablation_configs_are_resized(tmp_path):
    from e3relax.benchmark.suite import ablation_runs

    _write_configs(tmp_path / "configs")
    runs = {r.key: r for r in ablation_runs(tmp_path / "configs")}
    assert runs["e3relax_no_refinement"].config["model"] == {**TINY["e3relax_cpu.yaml"]["model"], "progressive": False}
    assert runs["e3relax_no_lattice_nodes"].config["model"]["lattice_nodes"] is False
    assert runs["e3relax_no_self_image"].config["model"]["hidden_channels"] == 8


def test_models_without_parameters_are_rows_not_runs():
    """The Dummy and the atomic-volume prior have nothing to train: the comparison computes their
    rows and never starts a training run for them, while every trainable model gets one."""
    from e3relax.benchmark.suite import model_runs
    from e3relax.registry import MODELS

    names = [run.key for run in model_runs(None, CONFIGS)]
    assert "dummy" not in names and "volume_prior" not in names
    assert {"e3relax", "painn", "egnn"} <= set(names)
    assert set(names) == set(MODELS.names()) - {"dummy", "volume_prior"}


def test_e3relax_trains_with_its_cpu_recipe():
    """The comparison's E3Relax is the shipped CPU training recipe: its model, loss, optimiser and
    learning-rate shape, without its data, run folder or budget."""
    from e3relax.benchmark.suite import config_path, model_runs

    recipe = yaml.safe_load((CONFIGS / "train_e3relax_cpu.yaml").read_text())
    assert config_path(CONFIGS, "e3relax") == CONFIGS / "train_e3relax_cpu.yaml"
    cfg = model_runs(["e3relax"], CONFIGS)[0].config
    assert cfg["model"] == recipe["model"] and cfg["optim"] == recipe["optim"] and cfg["loss"] == recipe["loss"]
    assert cfg["schedule"] == {k: recipe["schedule"][k] for k in ("lr_schedule", "warmup_steps")}
    assert not {"data", "run_dir", "seed", "device", "log"} & set(cfg)


def test_merge_seeds_from_another_comparison(compare_run, tmp_path):
    from e3relax.benchmark.saved import merge_results

    out, _ = compare_run
    doc = json.loads((out / "results.json").read_text())
    base = json.loads(json.dumps(doc))
    other = json.loads(json.dumps(doc))
    for entry in base["models"].values():
        entry["seeds"].pop("1")
    for entry in other["models"].values():
        entry["seeds"].pop("0")
    base["chgnet"] = base["energy"] = None  # the CHGNet comparison ran in the other folder only
    other["meta"]["dataset"] = {**other["meta"]["dataset"], "source": "elsewhere/data", "folder": "elsewhere/data"}
    merged = merge_results(base, other, "other")
    assert merged["meta"]["seeds"] == [0, 1]
    assert merged["models"]["painn"]["seeds"] == doc["models"]["painn"]["seeds"]
    assert merged["chgnet"] == doc["chgnet"] and merged["energy"] == doc["energy"]
    other["meta"]["budget"] = {**other["meta"]["budget"], "steps": 5}
    with pytest.raises(ValueError, match="budget differs"):
        merge_results(base, other, "other")
    # on the command line a refused merge is one line and exit 2, and so is a folder without results
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "results.json").write_text(json.dumps(base))
    (tmp_path / "b" / "results.json").write_text(json.dumps(other))
    for argv in (["--render", "--out", str(tmp_path / "a"), "--merge", str(tmp_path / "b")],
                 ["--render", "--out", str(tmp_path / "missing")]):
        proc = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("compare_baselines: error: ")


def test_a_narrower_command_keeps_the_folders_other_records(compare_run, tmp_path):
    """Running one model and seed again in a finished folder trains nothing and drops nothing: the
    other models, seeds and the CHGNet comparison stay in results.json."""
    out, _ = compare_run
    again = tmp_path / "again"
    shutil.copytree(out, again)
    before = json.loads((again / "results.json").read_text())
    src = out.parent
    cmd = [sys.executable, str(SCRIPT), "--data", str(src / "src"), "--layout", "poscar_pairs",
           "--data-cache", str(src / "cache"), "--split-ratio", "2:1:1", "--models", "painn",
           "--config-dir", str(src / "configs"), "--steps", "4", "--eval-every", "2", "--batch-size", "4",
           "--seeds", "1", "--chgnet", "0", "--timing-structures", "2", "--out", str(again)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=src,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg", "HOME": str(src)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = json.loads((again / "results.json").read_text())
    assert set(after["models"]) == set(before["models"])
    for key, entry in before["models"].items():
        assert after["models"][key]["seeds"] == entry["seeds"], key
    assert after["meta"]["seeds"] == [0, 1] and after["chgnet"] == before["chgnet"]
    assert "PaiNN seed 1: finished earlier, kept" in proc.stdout  # nothing trained (the records are equal too)


def test_learning_curves_figure(tmp_path, monkeypatch):
    from matplotlib.axes import Axes
    from PIL import Image

    from e3relax.benchmark import figures

    drawn = []
    plot = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda ax, x, y, **kw: drawn.append((list(x), list(y), kw)) or plot(ax, x, y, **kw))
    hist = {"E3Relax": {0: [(2, 0.9), (4, 0.7)], 1: [(2, 0.95), (4, 0.8)]}, "PaiNN": {0: [(3, 0.85)]}}
    path = figures.learning_curves(hist, 16, tmp_path / "lc.png", title="t")
    with Image.open(path) as img:
        assert img.size[0] > img.size[1] > 100
    # one line per (model, seed); x is structures seen; the second seed of a model is dashed, same colour
    assert [d[0] for d in drawn] == [[32.0, 64.0], [32.0, 64.0], [48.0]]
    assert [d[1] for d in drawn] == [[0.9, 0.7], [0.95, 0.8], [0.85]]
    assert [d[2]["ls"] for d in drawn] == ["-", "--", "-"] and drawn[0][2]["color"] == drawn[1][2]["color"]
    assert drawn[2][2]["color"] != drawn[0][2]["color"]
    with pytest.raises(ValueError, match="no run has a validation point"):
        figures.learning_curves({"E3Relax": {0: []}}, 16, tmp_path / "empty.png")


def test_budget_in_cpu_seconds_with_a_plateau_stop():
    from e3relax.benchmark.budget import Budget

    b = Budget(steps=10**6, eval_every=250, cpu_s=3600.0, patience=10)
    sched = b.engine_config()["schedule"]
    assert sched["time_clock"] == "cpu" and sched["time_limit_s"] == 3600.0 and sched["early_stop_patience"] == 10
    assert "1.00 CPU-hours" in b.describe() and "10 validations without improvement" in b.describe()
    assert Budget(wall_s=60.0).engine_config()["schedule"]["time_clock"] == "wall"
    with pytest.raises(ValueError, match="not both"):
        Budget(wall_s=60.0, cpu_s=60.0)


def test_parallel_comparison_continues_where_it_stopped(tmp_path):
    """Two jobs at a time in their own processes; a second run of the same command keeps what
    finished, tests a trained run again without retraining, and resumes a stopped one."""
    _write_dataset(tmp_path / "src")
    _write_configs(tmp_path / "configs")
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--data", str(tmp_path / "src"), "--layout", "poscar_pairs",
           "--data-cache", str(tmp_path / "cache"), "--split-ratio", "2:1:1", "--models", "e3relax,painn",
           "--config-dir", str(tmp_path / "configs"), "--steps", "4", "--eval-every", "2", "--batch-size", "4",
           "--seeds", "0", "--chgnet", "0", "--timing-structures", "2", "--jobs", "2", "--out", str(out)]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg", "HOME": str(tmp_path)}
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "2 runs at a time" in first.stdout and "running 2 (model, seed) jobs" in first.stdout
    assert (out / "records" / "e3relax_s0.json").is_file() and (out / "jobs" / "painn_s0.log").is_file()
    log = (out / "jobs" / "painn_s0.log").read_text()  # each validation shows in the job's log, nothing else of the engine
    assert "e3relax.engine.trainer: iteration 2: val mae_pos" in log and "iteration 4: val" in log
    assert not any(" e3relax.engine." in line and "e3relax.engine.trainer" not in line and " INFO " in line
                   for line in log.splitlines())
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["models"]["painn"]["seeds"]) == {"0"} and set(doc["models"]["e3relax"]["seeds"]) == {"0"}
    # stop painn after its training (no record) and e3relax in the middle (a checkpoint, nothing else)
    (out / "records" / "painn_s0.json").unlink()
    (out / "records" / "e3relax_s0.json").unlink()
    (out / "runs" / "e3relax_s0" / "trained.json").unlink()
    for key in ("painn", "e3relax"):
        doc["models"][key]["seeds"] = {}
    (out / "results.json").write_text(json.dumps(doc))
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    logs = {k: (out / "jobs" / f"{k}_s0.log").read_text() for k in ("painn", "e3relax")}
    assert "resuming from its last checkpoint" in logs["e3relax"]
    assert logs["painn"].count("PaiNN seed 0: training") == 1  # trained once, only tested again
    doc = json.loads((out / "results.json").read_text())
    assert doc["models"]["painn"]["seeds"]["0"]["steps"] == 4 and doc["models"]["e3relax"]["seeds"]["0"]["steps"] == 4
    third = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert third.returncode == 0 and third.stdout.count("finished earlier, kept") == 2
    other = subprocess.run([*cmd[:-2], "--steps", "6", "--out", str(out)], capture_output=True, text=True,
                           timeout=300, cwd=tmp_path, env=env)
    assert other.returncode == 2 and "another budget" in other.stderr + other.stdout
    # only results.json carried to a fresh folder (as when a comparison is continued elsewhere)
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(out / "results.json", copy / "results.json")
    moved = subprocess.run([*cmd[:-1], str(copy)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                           env=env)
    assert moved.returncode == 0, moved.stdout[-3000:] + moved.stderr[-3000:]
    assert moved.stdout.count("finished earlier, kept") == 2
    assert not (copy / "jobs").exists() and not (copy / "runs").exists()  # nothing was trained again
    assert (copy / "results.md").is_file() and (copy / "figures" / "learning_curves.png").is_file()


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_baselines_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zero_argument_budget_counts_cpu_seconds(monkeypatch):
    """The zero-argument run budgets every model in CPU-seconds of its own process (a busy machine
    does not shrink it) and trains one model per core, two at most; explicit flags win."""
    script = _load_script()
    monkeypatch.setattr(script.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    args = script.parse_args([])
    assert args.cpu_time == script.ZERO_ARG_CPU_S and args.wall_time is None and args.steps == 10_000
    assert args.jobs == 2
    monkeypatch.setattr(script.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert script.parse_args([]).jobs == 1
    args = script.parse_args(["--wall-time", "30", "--jobs", "1"])
    assert args.wall_time == 30 and args.cpu_time is None and args.jobs == 1 and args.steps == 10**9
    assert script.parse_args(["--data", "somewhere"]).jobs == 1
    with pytest.raises(SystemExit):
        script.parse_args(["--jobs", "0"])


def test_a_copied_comparison_continues_with_its_data_at_another_path():
    """A comparison's identity is its data and budget, not where the data lies: a results.json copied
    next to the same data at another path continues, while other data, split or budget is refused."""
    from e3relax.benchmark.saved import same_comparison as _identity

    here = {"name": "srnbh", "source": "/root/runs/data/srnbh", "layout": "lmdb", "folder": "/root/runs/data/srnbh"}
    there = {**here, "source": "runs/data/srnbh", "folder": "/home/me/runs/data/srnbh"}
    assert _identity(here) == _identity(there)
    assert _identity(here) != _identity({**here, "name": "pnictides"})
    assert _identity({"train": 516, "val": 73}) != _identity({"train": 515, "val": 74})
    assert _identity({"cpu_s": 2700.0, "patience": 10}) != _identity({"cpu_s": 1800.0, "patience": 10})


def test_one_lr_schedule_for_every_model_each_at_its_own_rate(tmp_path):
    """``--lr-schedule`` replaces the schedule each model's config chose, keeps its peak rate and
    warmup, and is part of the budget only when given (older records describe the same budget)."""
    from e3relax.benchmark.budget import Budget
    from e3relax.benchmark.runner import engine_config
    from e3relax.benchmark.suite import model_runs

    configs = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"
    runs = {r.key: r for r in model_runs(["painn", "e3relax"], configs)}
    splits = {"train": tmp_path / "train.lmdb", "val": tmp_path / "val.lmdb"}

    def schedule(run, budget):
        cfg = engine_config(runs[run], 0, splits, budget, tmp_path / run, "cpu")
        return cfg["schedule"], cfg["optim"]["lr"]

    plain = Budget(steps=10**6, eval_every=250, cpu_s=3600.0)
    shared = Budget(steps=10**6, eval_every=250, cpu_s=3600.0, lr_schedule="cosine")
    (painn, painn_lr), (e3, e3_lr) = schedule("painn", plain), schedule("e3relax", plain)
    assert painn["lr_schedule"] == "plateau" and e3["lr_schedule"] == "cosine"  # each config decides
    (painn_c, painn_c_lr), (e3_c, e3_c_lr) = schedule("painn", shared), schedule("e3relax", shared)
    assert painn_c["lr_schedule"] == e3_c["lr_schedule"] == "cosine"
    assert (painn_c_lr, e3_c_lr) == (painn_lr, e3_lr) and e3_c["warmup_steps"] == e3["warmup_steps"] == 200
    assert "lr_schedule" not in plain.as_dict() and shared.as_dict()["lr_schedule"] == "cosine"
    assert Budget(**shared.as_dict()) == shared
    assert "cosine learning-rate schedule for every model" in shared.describe()
    with pytest.raises(ValueError, match="lr_schedule must be one of cosine, plateau, got 'step'"):
        Budget(lr_schedule="step")
