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

To continue a shipped member instead of starting over (its run folder gone), add
``--init-from lib/pretrained/<name>_s<seed>.pt``; ``--resume`` continues a run folder that still
exists. Each model card (``lib/pretrained/<name>.md``) gives the configuration its checkpoints
carry and how they were trained, including any such continuation.
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
               init_from: str | None = None, canonical: bool = False, lr: float | None = None) -> dict:
    """The ``e3relax train`` config of one ensemble member: the CPU recipe on this dataset
    (``budget_min`` CPU-minutes, the cap; None: the recipe's own time limit), stopped early after
    ``patience`` validations without improvement (None: the recipe's), optionally starting from the
    EMA weights of ``init_from`` (a member trained before, when its run folder is gone), on pairs
    in the canonical frame if ``canonical`` (so the member predicts in that frame by default), with
    peak learning rate ``lr`` (None: the recipe's; a lower one anneals a continued member)."""
    import yaml

    cfg = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    data = data_dir(name, canonical)
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
    if lr is not None:
        cfg["optim"]["lr"] = float(lr)
    cfg["log"] = {**cfg.get("log", {}), "progress_bar": False, "tensorboard": False, "figures": False}
    return cfg


def e3relax(*args: str, env: dict | None = None) -> None:
    cmd = [sys.executable, "-m", "e3relax.cli.main", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)


def data_dir(name: str, canonical: bool = False) -> Path:
    """The converted set: pairs in the published cells, or (``canonical``) in the canonical frame."""
    return WORK / "data" / (f"{name}_canonical" if canonical else name)


def convert(name: str, canonical: bool = False) -> Path:
    out = data_dir(name, canonical)
    if not (out / "report.json").exists():
        spec = DATASETS[name]
        e3relax("data", "convert", spec["layout"], "--src", str(spec["src"]), "--out", str(out), "--seed", "0",
                "--no-progress", *(["--canonical-frame"] if canonical else []))
    return out


def train_lmdb(name: str, seed: int) -> Path:
    """The training LMDB a member's run used (its ``run.yaml``), so the exported statistics, graph
    settings and prediction frame are those it was trained with; with the run folder gone, the set
    in the frame the shipped member records (``predict.frame``)."""
    import yaml

    run_yaml = WORK / f"{name}_s{seed}" / "run.yaml"
    if run_yaml.exists():
        return Path(yaml.safe_load(run_yaml.read_text())["data"]["train"])
    shipped = OUT / f"{name}_s{seed}.pt"
    if shipped.exists():
        from e3relax.engine.checkpoint import load_checkpoint

        frame = (load_checkpoint(shipped).get("predict") or {}).get("frame")
        return data_dir(name, frame == "canonical") / "train.lmdb"
    return data_dir(name) / "train.lmdb"


def member_history(member: Path) -> dict:
    """A shipped member's training record for its card: its run folder's ``trained.json`` or, with
    that folder gone, the copy the exported file carries; ``training`` is the file's time record."""
    from pretrained_card import member_record

    from e3relax.engine.checkpoint import load_checkpoint

    training = dict(load_checkpoint(member).get("training") or {})
    kept = training.pop("record", None) or {}
    return {**(member_record(WORK / member.stem) or kept), "training": training}


def train(name: str, seed: int, budget_min: float | None, patience: int | None = None,
          init_from: str | None = None, resume: bool = False, canonical: bool = False,
          init_cpu_hours: float | None = None, lr: float | None = None) -> Path:
    """Train one member; ``resume`` continues its run folder from ``last.pt``. The run's summary
    (validation history, CPU time, plateau verdict) is written to ``RUN/trained.json``. Members are
    always scored on the published pairs (``data/<name>``), whatever frame they train in."""
    import yaml

    from e3relax.benchmark.runner import convergence
    from e3relax.engine.trainer import train as engine_train

    convert(name)
    convert(name, canonical)
    cfg = run_config(name, seed, budget_min, patience, init_from, canonical, lr)
    run_dir = Path(cfg["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (run_dir / "lineage.json").unlink(missing_ok=True)  # a fresh run: its own starting point
    before = lineage(run_dir, init_from, init_cpu_hours)
    (run_dir / "run.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    from e3relax.engine.config import resolve_config

    summary = engine_train(resolve_config(cfg), resume=resume)
    record = {k: summary.get(k) for k in ("iteration", "val_history", "val_records", "time_used_s", "time_limit_hit",
                                          "best_val_pooled_mae_pos", "structures_per_cpu_s",
                                          "skipped_nonfinite_steps")}
    record.update(convergence([(it, v) for it, v in summary.get("val_history") or []]),
                  budget_min=budget_min, init_from=init_from or before["init_from"],
                  resumed=resume, canonical_frame=canonical)
    (run_dir / "trained.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("iteration", "time_used_s", "best_val", "converged")}), flush=True)
    return run_dir


def evaluate(name: str, seed: int) -> Path:
    """Score the exported member (what ships, with its recorded training frame) on the test split."""
    run_dir = WORK / f"{name}_s{seed}"
    out = run_dir / "eval_test"
    e3relax("evaluate", "--checkpoint", str(OUT / f"{name}_s{seed}.pt"), "--data",
            str(WORK / "data" / name / "test.lmdb"), "--out", str(out), "--device", "cpu")
    return out


def member_test(name: str, member: Path) -> Path:
    """The test summary of a shipped member, scored again if its run folder lost it."""
    summary = WORK / member.stem / "eval_test" / "summary.json"
    if not summary.exists():
        evaluate(name, int(member.stem.rsplit("_s", 1)[1]))
    return summary


def lineage(run_dir: Path, init_from: str | None, init_cpu_hours: float | None = None) -> dict:
    """What the member's weights were trained for before this run folder: ``earlier_time_used_s``
    (None: unknown), read once from the ``training`` record of the ``init_from`` file (or, for a file
    without one, ``init_cpu_hours``) and kept in ``RUN/lineage.json``, so exporting again after that
    file was overwritten by this member does not count its time twice."""
    path = run_dir / "lineage.json"
    if path.exists():
        return json.loads(path.read_text())
    earlier = None
    if init_from:
        from e3relax.engine.checkpoint import load_checkpoint

        earlier = (load_checkpoint(init_from).get("training") or {}).get("time_used_s")
        if earlier is None and init_cpu_hours is not None:
            earlier = float(init_cpu_hours) * 3600
    record = {"init_from": Path(init_from).name if init_from else None, "earlier_time_used_s": earlier}
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def export(name: str, seed: int, init_cpu_hours: float | None = None) -> Path:
    """Slim copy of ``best.pt`` with the training data's graph settings, volume-ratio range and
    training time (this run's plus that of the weights it started from, when known)."""
    from e3relax.datasets.reader import LmdbDataset
    from e3relax.predict.pretrained import export_slim, training_statistics

    run_dir = WORK / f"{name}_s{seed}"
    lmdb = train_lmdb(name, seed)
    stats = training_statistics(lmdb)
    graph = LmdbDataset(lmdb).metadata["graph"]
    from pretrained_card import member_record

    rec = member_record(run_dir)
    before = lineage(run_dir, rec.get("init_from"), init_cpu_hours)
    own = float(rec.get("time_used_s") or 0.0)
    earlier = before["earlier_time_used_s"]
    training = {"this_run_time_used_s": own, "steps": int(rec.get("iteration") or 0),
                "init_from": before["init_from"], "earlier_time_used_s": earlier,
                "time_used_s": own + earlier if earlier is not None else None,
                "record": rec}  # the card's curves and verdicts, should the run folder be lost
    dst = export_slim(run_dir / "checkpoints" / "best.pt", OUT / f"{name}_s{seed}.pt",
                      graph=graph, predict=stats, training=training)
    print(f"exported {dst} ({dst.stat().st_size / 1e6:.2f} MB)")
    return dst


def member_command(name: str, budget_min: float | None, canonical: bool, continued: bool = False,
                   lr: float | None = None) -> str:
    """The command that trained each member of a round, for its model card: ``continued`` members
    started from the shipped weights; ``lr`` is given when it is not the recipe's."""
    import yaml

    recipe_lr = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))["optim"]["lr"]
    return (f"OMP_NUM_THREADS=1 python benchmarks/train_pretrained.py train {name} --seed S"
            + (f" --init-from lib/pretrained/{name}_sS.pt" if continued else "")
            + (f" --lr {lr:g}" if lr is not None and float(lr) != float(recipe_lr) else "")
            + (f" --budget-min {budget_min:g}" if budget_min else "")
            + (" --canonical-frame" if canonical else ""))


def pretrained_index_file() -> dict:
    path = OUT / "index.json"
    return json.loads(path.read_text()) if path.exists() else {}


def finalize(budget_min: float | None = None, names: list[str] | None = None) -> None:
    """Uncertainty thresholds into the members, ensemble scores, learning curves, model cards and
    ``index.json``."""
    import numpy as np
    import torch
    import yaml
    from pretrained_card import COLUMNS, card

    from e3relax.benchmark.timed_runs import plot_curves, reference_lines
    from e3relax.datasets.reader import LmdbDataset
    from e3relax.engine.checkpoint import load_checkpoint
    from e3relax.predict import Relaxer
    from e3relax.predict.uncertainty import score_relaxer, uncertainty_quality

    index = pretrained_index_file()
    for name in names or DATASETS:
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
        ens = {k: float(np.mean(test[k])) for k, _, _ in COLUMNS}
        quality = {"spearman": float("nan"), "recall_worst": float("nan"), "threshold": threshold,
                   "thr_flagged_fraction": float("nan"), "thr_recall_worst": float("nan")}
        if len(members) > 1:
            quality.update(uncertainty_quality(test["uncertainty"], test["mae_pos"]))
            q = uncertainty_quality(test["uncertainty"], test["mae_pos"], threshold=threshold)
            quality["thr_flagged_fraction"], quality["thr_recall_worst"] = q["flagged_fraction"], q["recall_worst"]
        records = [member_history(m) for m in members]
        member_tests = {m.stem: json.loads(member_test(name, m).read_text())["model"] for m in members}
        references = reference_lines(data, None, split="test")
        first_lmdb = train_lmdb(name, int(members[0].stem.rsplit("_s", 1)[1]))
        figure = None
        curves = {m.stem: r["val_records"] for m, r in zip(members, records) if r.get("val_records")}
        if curves:  # the members validated on the pairs of their training frame: the lines too
            figure = f"{name}_curves.png"
            plot_curves(curves, reference_lines(first_lmdb.parent, DATASETS[name]["max_val"]), OUT / figure,
                        f"{name}: validation of each member (CPU recipe, one thread)")
        run_yaml = WORK / members[0].stem / "run.yaml"  # what the members were trained with
        config = yaml.safe_load(run_yaml.read_text()) if run_yaml.exists() else load_checkpoint(members[0])["config"]
        command = member_command(name, budget_min, first_lmdb.parent.name.endswith("_canonical"),
                                 continued=any(r.get("init_from") for r in records), lr=config["optim"].get("lr"))
        text = card(name, report=json.loads((data / "report.json").read_text()), layout=DATASETS[name]["layout"],
                    config=config, graph=LmdbDataset(first_lmdb).metadata["graph"], members=members,
                    records=records, member_tests=member_tests, ensemble=ens, references=references,
                    quality=quality, figure=figure, command=command,
                    frame=(load_checkpoint(members[0]).get("predict") or {}).get("frame", "canonical"))
        (OUT / f"{name}.md").write_text(text)
        (WORK / f"{name}_report.json").write_text(json.dumps({"ensemble": ens, "quality": quality,
                                                              "references": references}, indent=2))
        index[name] = {"members": [m.name for m in members], "card": f"{name}.md",
                       "description": f"E3Relax ({len(members)}-member ensemble) trained on the {name} DFT set",
                       "metrics": {"test coord MAE (A), ensemble": round(ens["mae_pos"], 4),
                                   "test coord MAE (A), Dummy": round(references["Dummy"]["mae_pos"], 4),
                                   "test volume MAE (A^3), ensemble": round(ens["mae_vol"], 3),
                                   "test volume MAE (A^3), Dummy": round(references["Dummy"]["mae_vol"], 3),
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
    t.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: the recipe's); with --init-from, a lower one anneals the member")
    t.add_argument("--canonical-frame", action="store_true",
                   help="train on the pairs converted with --canonical-frame (the member then predicts in "
                        "the canonical frame by default); scored on the published pairs either way")
    t.add_argument("--no-export", action="store_true", help="only train (export later)")
    e = sub.add_parser("export", help="evaluate and export a trained member")
    e.add_argument("name", choices=sorted(DATASETS))
    e.add_argument("--seed", type=int, default=0)
    for sp in (t, e):
        sp.add_argument("--init-cpu-hours", type=float, default=None,
                        help="CPU-hours the --init-from weights were trained for, if their file does not "
                             "record it (members shipped before it did)")
    f = sub.add_parser("finalize", help="write index.json and the model cards")
    f.add_argument("--budget-min", type=float, default=None, help="the members' budget (for the model card)")
    f.add_argument("names", nargs="*", metavar="NAME",
                   help=f"only these sets, of {', '.join(sorted(DATASETS))} (default: every set with members)")
    args = p.parse_args(argv)
    if getattr(args, "init_from", None):  # the run's records outlive this working directory
        args.init_from = str(Path(args.init_from).resolve())
    if args.cmd == "train":
        from e3relax.errors import Interrupted

        try:
            train(args.name, args.seed, args.budget_min, args.patience, args.init_from, args.resume,
                  args.canonical_frame, args.init_cpu_hours, args.lr)
        except (Interrupted, KeyboardInterrupt) as exc:
            again = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--resume"]
            what = "; ".join(str(exc).split("; ")[:2]) or "stopped"  # the signal, the step, the saved file
            print(f"train_pretrained: {what}; continue with: python "
                  f"benchmarks/train_pretrained.py {' '.join(again)} --resume", file=sys.stderr)
            return 130
        if not args.no_export:
            export(args.name, args.seed, args.init_cpu_hours)
            evaluate(args.name, args.seed)
    elif args.cmd == "export":
        export(args.name, args.seed, args.init_cpu_hours)
        evaluate(args.name, args.seed)
    else:
        unknown = sorted(set(args.names) - set(DATASETS))
        if unknown:
            p.error(f"finalize: unknown set(s) {', '.join(unknown)}; choose from {', '.join(sorted(DATASETS))}")
        finalize(args.budget_min, args.names or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
