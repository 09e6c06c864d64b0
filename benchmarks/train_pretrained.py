"""Train the pretrained E3Relax checkpoints shipped in ``e3relax/pretrained`` (reproducible recipe).

For each real dataset (``pnictides``: poscar_pairs layout, ``srnbh``: vasp_dirs layout) and each
ensemble seed, this script

1. converts the raw data with ``e3relax data convert`` into ``runs/pretrained/data/<name>``
   (gitignored; the split is the converter's seeded 80:10:10 id-hash split, seed 0);
2. trains E3Relax with ``e3relax train`` from the default CPU recipe
   (``benchmarks/configs/train_e3relax_cpu.yaml``: its model, optimiser and schedule) for a fixed
   budget of CPU time (``schedule.time_limit_s``; ``--budget-min``, default the recipe's), one
   thread per run;
3. scores ``best.pt`` on the held-out test split with ``e3relax evaluate`` (model next to Dummy);
4. writes a slim copy (EMA weights, config, graph settings, training-set statistics) to
   ``lib/pretrained/<name>[_s<seed>].pt``; ``--finalize`` then writes ``index.json`` and the
   model cards.

Usage (from the repository root, raw data in ../shared/data)::

    OMP_NUM_THREADS=1 python benchmarks/train_pretrained.py train pnictides --seed 0 --budget-min 20 &
    OMP_NUM_THREADS=1 python benchmarks/train_pretrained.py train srnbh --seed 0 --budget-min 20 &
    python benchmarks/train_pretrained.py finalize --budget-min 20

The checkpoints shipped now were trained before the recipe was chosen (F = 64, 32 radial
functions, lr 5e-4 with plateau decay, 20 CPU-minutes per member); each model card describes the
configuration its checkpoints carry.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WORK = ROOT / "runs" / "pretrained"
OUT = ROOT / "lib" / "pretrained"

#: per set: layout, raw data, validation subset, and steps between validations (Sr-Nb-H's 516
#: training pairs are one epoch every 33 steps, so it is validated more often than the recipe's 250)
DATASETS = {
    "pnictides": {"layout": "poscar_pairs", "src": SHARED / "pnictides", "max_val": 200, "every": 250},
    "srnbh": {"layout": "vasp_dirs", "src": SHARED / "srnbh", "max_val": None, "every": 100},
}

#: the default CPU training recipe every member starts from
RECIPE = ROOT / "benchmarks" / "configs" / "train_e3relax_cpu.yaml"


def run_config(name: str, seed: int, budget_min: float | None = None, patience: int | None = None,
               init_from: str | None = None) -> dict:
    """The ``e3relax train`` config of one ensemble member: the CPU recipe on this dataset
    (``budget_min`` CPU-minutes, the cap; None: the recipe's own time limit), stopped early after
    ``patience`` validations without improvement (None: the recipe's), optionally starting from the
    EMA weights of ``init_from`` (a member trained before, when its run folder is gone)."""
    import yaml

    cfg = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    data = WORK / "data" / name
    cfg.update(run_dir=str(WORK / f"{name}_s{seed}"), seed=seed, device="cpu")
    cfg["data"].update(train=str(data / "train.lmdb"), val=str(data / "val.lmdb"),
                       max_val_structures=DATASETS[name]["max_val"])
    cfg["schedule"].update(time_clock="cpu", epoch_length=DATASETS[name]["every"])
    if budget_min is not None:
        cfg["schedule"]["time_limit_s"] = budget_min * 60
    if patience is not None:
        cfg["schedule"]["early_stop_patience"] = patience
    if init_from:
        cfg["init_from"] = str(init_from)
    cfg["log"] = {**cfg.get("log", {}), "progress_bar": False, "tensorboard": False, "figures": False}
    return cfg


def e3relax(*args: str, env: dict | None = None) -> None:
    cmd = [sys.executable, "-m", "e3relax.cli.main", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)


def convert(name: str) -> Path:
    out = WORK / "data" / name
    if not (out / "report.json").exists():
        spec = DATASETS[name]
        e3relax("data", "convert", spec["layout"], "--src", str(spec["src"]), "--out", str(out), "--seed", "0",
                "--no-progress")
    return out


def train(name: str, seed: int, budget_min: float | None, patience: int | None = None,
          init_from: str | None = None, resume: bool = False) -> Path:
    """Train one member; ``resume`` continues its run folder from ``last.pt``. The run's summary
    (validation history, CPU time, plateau verdict) is written to ``RUN/trained.json``."""
    import yaml

    from e3relax.benchmark.runner import convergence
    from e3relax.engine.trainer import train as engine_train

    convert(name)
    cfg = run_config(name, seed, budget_min, patience, init_from)
    run_dir = Path(cfg["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    from e3relax.engine.config import resolve_config

    summary = engine_train(resolve_config(cfg), resume=resume)
    record = {k: summary.get(k) for k in ("iteration", "val_history", "val_records", "time_used_s", "time_limit_hit",
                                          "best_val_pooled_mae_pos", "structures_per_cpu_s",
                                          "skipped_nonfinite_steps")}
    record.update(convergence([(it, v) for it, v in summary.get("val_history") or []]),
                  budget_min=budget_min, init_from=init_from, resumed=resume)
    (run_dir / "trained.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("iteration", "time_used_s", "best_val", "converged")}), flush=True)
    return run_dir


def evaluate(name: str, seed: int) -> Path:
    run_dir = WORK / f"{name}_s{seed}"
    out = run_dir / "eval_test"
    e3relax("evaluate", "--checkpoint", str(run_dir / "checkpoints" / "best.pt"), "--data",
            str(WORK / "data" / name / "test.lmdb"), "--out", str(out), "--device", "cpu")
    return out


def export(name: str, seed: int) -> Path:
    """Slim copy of ``best.pt`` with the training data's graph settings and volume-ratio range."""
    from e3relax.datasets.reader import LmdbDataset
    from e3relax.predict.pretrained import export_slim, training_statistics

    train_lmdb = WORK / "data" / name / "train.lmdb"
    stats = training_statistics(train_lmdb)
    graph = LmdbDataset(train_lmdb).metadata["graph"]
    dst = export_slim(WORK / f"{name}_s{seed}" / "checkpoints" / "best.pt", OUT / f"{name}_s{seed}.pt",
                      graph=graph, predict=stats)
    print(f"exported {dst} ({dst.stat().st_size / 1e6:.2f} MB)")
    return dst


def _metric_table(summary: dict) -> list[str]:
    rows = ["| metric (test split, mean over structures; A, A^2, A^3, degrees) | E3Relax | Dummy |", "|---|---|---|"]
    first = ["mae_pos", "shape_dev", "mae_vol", "pooled_mae_pos", "abc_mae", "angle_mae"]
    for k in sorted(summary["model"], key=lambda m: (first.index(m) if m in first else len(first), m)):
        v = summary["model"][k]
        d = summary["dummy"].get(k)
        if isinstance(v, float) and d is not None:
            rows.append(f"| {k} | {v:.4f} | {d:.4f} |")
    return rows


def _member_budget(name: str, seed: int) -> str:
    log_file = WORK / f"train_{name}_s{seed}.log"
    its = [line.split("iteration ")[1].split(":")[0] for line in log_file.read_text().splitlines()
           if "val coord MAE" in line] if log_file.exists() else []
    return f"{its[-1]} optimiser steps" if its else "unknown steps"


def card(name: str, members: list[Path], evals: list[dict], ens: dict, quality: dict,
         budget_min: float | None) -> str:
    """Model card text of one pretrained name."""
    rep = json.loads((WORK / "data" / name / "report.json").read_text())
    c = rep["counts"]
    from e3relax.engine.checkpoint import load_checkpoint

    cfg = load_checkpoint(members[0])["config"]  # what the members were trained with
    if budget_min is None:
        limit = cfg["schedule"].get("time_limit_s")
        if not limit:
            raise SystemExit(f"{members[0]} does not record its time budget; pass finalize --budget-min")
        budget_min = limit / 60
    lines = [
        f"# Pretrained E3Relax: `{name}`", "",
        f"- **Data**: `{DATASETS[name]['layout']}` layout of the public `{name}` DFT relaxation set "
        f"({c['items']} items, {c['converted']} valid pairs; skipped: {c['by_reason']}).",
        f"- **Split**: seeded id-hash split 80:10:10 (`e3relax data convert --seed 0`): train {c['splits']['train']}, "
        f"val {c['splits']['val']}, test {c['splits']['test']} (held out; metrics below).",
        f"- **Model**: `{json.dumps(cfg['model'])}`, float32, EMA weights; graph `{rep['settings']['graph']}`.",
        f"- **Training**: `OMP_NUM_THREADS=1 python benchmarks/train_pretrained.py train {name} --seed S "
        f"--budget-min {budget_min:g}` for S in {list(range(len(members)))}: `e3relax train` with lr "
        f"{cfg['optim']['lr']} ({cfg['schedule'].get('lr_schedule', 'plateau')} schedule), batch {cfg['data']['batch_size']}, evaluation every "
        f"{cfg['schedule']['epoch_length']} steps, stopped after {budget_min:g} min of CPU time on one "
        "core (" + ", ".join(_member_budget(name, i) for i in range(len(members))) + ").",
        "- **Files**: " + ", ".join(f"`{m.name}` ({m.stat().st_size / 1e6:.2f} MB)" for m in members), "",
        "A short CPU budget: these checkpoints are a working starting point (and a base for fine-tuning), "
        "not a converged model.", "",
    ]
    for i, ev in enumerate(evals):
        lines += [f"## Member s{i}: `e3relax evaluate` on the test split", ""] + _metric_table(ev) + [""]
    lines += [
        "## Ensemble (mean of the members) and its uncertainty, test split", "",
        f"- coordinate MAE {ens['mae_pos']:.4f} A (Dummy {ens['dummy_mae_pos']:.4f} A), "
        f"volume MAE {ens['mae_vol']:.3f} A^3 (Dummy {ens['dummy_mae_vol']:.3f} A^3), {ens['num']} structures",
        f"- uncertainty (RMS spread of the members' positions) vs actual coordinate MAE: Spearman "
        f"{quality['spearman']:.3f}; flagging the 10% most uncertain catches {quality['recall_worst']:.0%} of the "
        f"10% worst predictions (random: 10%)",
        f"- flag threshold (90th percentile of the validation uncertainty): {quality['threshold']:.4f} A; "
        f"it flags {quality['thr_flagged_fraction']:.0%} of test structures and {quality['thr_recall_worst']:.0%} "
        "of the 10% worst",
    ]
    return "\n".join(lines) + "\n"


def pretrained_index_file() -> dict:
    path = OUT / "index.json"
    return json.loads(path.read_text()) if path.exists() else {}


def finalize(budget_min: float | None = None) -> None:
    """Uncertainty thresholds into the members, ensemble scores, model cards and ``index.json``."""
    import numpy as np
    import torch

    from e3relax.predict import Relaxer
    from e3relax.predict.uncertainty import score_relaxer, uncertainty_quality

    index = pretrained_index_file()
    for name in DATASETS:
        members = sorted(OUT.glob(f"{name}_s*.pt"))
        if not members:
            continue
        relaxer = Relaxer.from_checkpoint(members)
        data = WORK / "data" / name
        threshold = float("nan")
        if len(members) > 1:
            val = score_relaxer(relaxer, data / "val.lmdb")
            threshold = float(np.quantile(val["uncertainty"], 0.9))
            for m in members:  # record the threshold so predictions get flagged "uncertain"
                ck = torch.load(m, map_location="cpu", weights_only=True)
                ck["predict"]["uncertainty_threshold"] = threshold
                torch.save(ck, m)
        test = score_relaxer(relaxer, data / "test.lmdb")
        np.savez(WORK / f"{name}_ensemble_test.npz", **{k: v for k, v in test.items() if k != "id"})
        ens = {k: float(np.mean(test[k])) for k in ("mae_pos", "dummy_mae_pos", "mae_vol", "dummy_mae_vol")}
        ens["num"] = int(len(test["mae_pos"]))
        quality = {"spearman": float("nan"), "recall_worst": float("nan"), "threshold": threshold,
                   "thr_flagged_fraction": float("nan"), "thr_recall_worst": float("nan")}
        if len(members) > 1:
            quality.update(uncertainty_quality(test["uncertainty"], test["mae_pos"]))
            q = uncertainty_quality(test["uncertainty"], test["mae_pos"], threshold=threshold)
            quality["thr_flagged_fraction"], quality["thr_recall_worst"] = q["flagged_fraction"], q["recall_worst"]
        evals = [json.loads((WORK / m.stem / "eval_test" / "summary.json").read_text()) for m in members]
        (OUT / f"{name}.md").write_text(card(name, members, evals, ens, quality, budget_min))
        (WORK / f"{name}_report.json").write_text(json.dumps({"ensemble": ens, "quality": quality}, indent=2))
        index[name] = {"members": [m.name for m in members], "card": f"{name}.md",
                       "description": f"E3Relax ({len(members)}-member ensemble) trained on the {name} DFT set",
                       "metrics": {"test coord MAE (A), ensemble": round(ens["mae_pos"], 4),
                                   "test coord MAE (A), Dummy": round(ens["dummy_mae_pos"], 4),
                                   "uncertainty Spearman vs error": round(quality["spearman"], 3)}}
        print(json.dumps(index[name], indent=2))
    (OUT / "index.json").write_text(json.dumps(index, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="convert, train one member, evaluate it, export it")
    t.add_argument("name", choices=sorted(DATASETS))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--budget-min", type=float, default=None, help="CPU-minutes per member; default: the recipe's")
    t.add_argument("--patience", type=int, default=None,
                   help="stop after this many validations without improvement; default: the recipe's")
    t.add_argument("--init-from", default=None, help="start from these weights (a shipped member)")
    t.add_argument("--resume", action="store_true", help="continue the member's run folder from last.pt")
    t.add_argument("--no-export", action="store_true", help="only train (export later)")
    e = sub.add_parser("export", help="evaluate and export a trained member")
    e.add_argument("name", choices=sorted(DATASETS))
    e.add_argument("--seed", type=int, default=0)
    f = sub.add_parser("finalize", help="write index.json and the model cards")
    f.add_argument("--budget-min", type=float, default=None, help="the members' budget (for the model card)")
    args = p.parse_args(argv)
    if args.cmd == "train":
        train(args.name, args.seed, args.budget_min, args.patience, args.init_from, args.resume)
        if not args.no_export:
            evaluate(args.name, args.seed)
            export(args.name, args.seed)
    elif args.cmd == "export":
        evaluate(args.name, args.seed)
        export(args.name, args.seed)
    else:
        finalize(args.budget_min)
    return 0


if __name__ == "__main__":
    sys.exit(main())
