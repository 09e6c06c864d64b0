"""What more training data does, at equal CPU time: trajectory-frame pairs, their weight, augmentation.

Every variant trains E3Relax with the CPU recipe (``benchmarks/configs/train_e3relax_cpu.yaml``)
for the same budget of CPU-seconds of its own process, one thread, on the same validation subset;
only ``data.train`` differs. The best checkpoint of each run (lowest validation coordinate error,
chosen on validation only) is then scored once on the test split, beside the Dummy and the
atomic-volume prior (fitted on the training pairs).

Variants (``--variants``):

- ``pairs``: the (unrelaxed -> relaxed) training pairs only;
- ``frames_w<f>``: the pairs and their trajectory-frame pairs (``train_frames.lmdb``, from
  ``e3relax data convert vasp_dirs ... --opt frames_as_pairs=true``), the frames drawn for the
  share ``f`` of the training stream (``data.train: [{path, weight}, ...]``);
- ``denoise_0.25``, ``interpolate_0.25``: the pairs, a quarter of the draws replaced by generated
  inputs (``data.augment``: the relaxed structure strained by up to 5% and rattled by 0.1 A, or a
  point between input and label; :mod:`e3relax.engine.augment`);
- ``finetune``: the pairs, starting from the weights of ``--init-from`` (its prior refitted here);
- ``joint``: half of the draws from the pairs, half from the training sets of ``--joint``.

Writes ``variants.md`` (table), ``variants.json`` and ``variants.png`` (validation curves) into
``--out``. Run the same command again to continue stopped runs; finished runs are not repeated.

Usage::

    e3relax data convert vasp_dirs --src ../shared/data/srnbh --out data/srnbh_frames --opt frames_as_pairs=true
    python benchmarks/data_variants.py --data data/srnbh_frames --cpu-minutes 15 --out results/frames_srnbh
    python benchmarks/data_variants.py --data data/pnictides --cpu-minutes 15 \
        --variants pairs denoise_0.25 interpolate_0.25 --out results/augment_pnictides
    python benchmarks/data_variants.py --data data/srnbh_frames --variants finetune joint \
        --init-from runs/e3relax_cpu --joint data/pnictides/train.lmdb data/builtin/train.lmdb \
        --out results/frames_srnbh
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from e3relax.benchmark.timed_runs import add_run_arguments, METRICS, plot_curves, records, reference_lines, run_all

CONFIG = Path(__file__).resolve().parent / "configs" / "train_e3relax_cpu.yaml"

#: variant name -> share of the training stream drawn from the trajectory-frame pairs (``frames``) and
#: the ``data.augment`` settings (none: off)
VARIANTS: dict[str, dict[str, Any]] = {
    "pairs": {"frames": 0.0},
    "frames_w0.25": {"frames": 0.25}, "frames_w0.5": {"frames": 0.5}, "frames_w0.75": {"frames": 0.75},
    "denoise_0.25": {"frames": 0.0, "augment": {"share": 0.25, "kind": "denoise", "strain": 0.05, "rattle": 0.1}},
    "interpolate_0.25": {"frames": 0.0, "augment": {"share": 0.25, "kind": "interpolate"}},
    "finetune": {"frames": 0.0, "init_from": True},
    "joint": {"frames": 0.0, "joint": True},
}


def train_spec(data: str | Path, frame_share: float, joint: list[str] | None = None) -> Any:
    """``data.train`` of a variant: the pairs, plus the frame pairs for ``frame_share`` of the draws,
    or (``joint``) half of the draws from these pairs and half from the other training sets."""
    pairs = f"{data}/train.lmdb"
    if joint:
        return [{"path": pairs, "weight": 0.5}] + [{"path": str(p), "weight": round(0.5 / len(joint), 6)}
                                                    for p in joint]
    if frame_share <= 0:
        return pairs
    return [{"path": pairs, "weight": round(1.0 - frame_share, 6)},
            {"path": f"{data}/train_frames.lmdb", "weight": round(frame_share, 6)}]


def runs(args: argparse.Namespace) -> dict[str, tuple[Path, dict[str, Any]]]:
    common = {"device": "cpu", "data.val": f"{args.data}/val.lmdb",
              "data.max_val_structures": args.val_structures, "data.num_workers": 0,
              "schedule.time_limit_s": args.cpu_minutes * 60, "schedule.time_clock": "cpu",
              "schedule.max_epochs": 100_000, "schedule.epoch_length": args.every,
              "schedule.early_stop_patience": None, "log.progress_bar": False, "log.figures": False,
              "seed": args.seed}
    out = {}
    for name in args.variants:
        v = VARIANTS[name]
        if v.get("init_from") and not args.init_from:
            raise SystemExit(f"variant {name} needs --init-from (a checkpoint trained on other data)")
        if v.get("joint") and not args.joint:
            raise SystemExit(f"variant {name} needs --joint (the other training LMDBs)")
        keys_set = {"data.train": train_spec(args.data, v["frames"], args.joint if v.get("joint") else None)}
        if v.get("augment"):
            keys_set["data.augment"] = v["augment"]
        if v.get("init_from"):
            keys_set["init_from"] = str(args.init_from)
        out[name] = (CONFIG, {**common, **keys_set})
    return out


def test_scores(out: Path, names: list[str], data: str | Path) -> dict[str, dict[str, float]]:
    """Test-split metrics of each run's best checkpoint (EMA weights), the Dummy and the prior."""
    import torch

    from e3relax.engine.checkpoint import model_from_checkpoint
    from e3relax.engine.data import build_dataset
    from e3relax.engine.evaluation import evaluate

    test = build_dataset(f"{data}/test.lmdb", torch.float64)
    scores = {}
    for name in names:
        model, _ = model_from_checkpoint(out / name / "checkpoints" / "best.pt", dtype=torch.float64)
        table = evaluate(model, test, progress=None)
        scores[name] = {m: float(table.summary[m]) for m, _ in METRICS}
    scores.update(reference_lines(data, None, split="test"))
    return scores


def table(curves, tests, lines, args) -> str:
    rows = [f"E3Relax, CPU recipe, {args.cpu_minutes:g} CPU-minutes per variant on `{Path(args.data).name}`, seed "
            f"{args.seed}. Validation: the best and the last evaluation on (up to) {args.val_structures} validation "
            "structures; test: the best-on-validation checkpoint on the whole test split.", "",
            "| variant | frame share | augmentation / start | steps | best val coordinates (Å) | val coordinates (Å) "
            "| val shape (Å²) | val volume (Å³) "
            "| test coordinates (Å) | test shape (Å²) | test volume (Å³) |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, recs in curves.items():
        last, t = recs[-1], tests[name]
        v = VARIANTS[name]
        aug = ", ".join(f"{k} {x}" for k, x in v["augment"].items()) if v.get("augment") else "off"
        aug += "; from --init-from" if v.get("init_from") else ""
        aug += "; joint, half the draws from --joint" if v.get("joint") else ""
        best = min(r["mae_pos"] for r in recs)
        rows.append(f"| {name} | {VARIANTS[name]['frames']:g} | {aug} | {int(last['iteration'])} | {best:.4f} | "
                    f"{last['mae_pos']:.4f} | "
                    f"{last['shape_dev']:.2f} | {last['mae_vol']:.2f} | {t['mae_pos']:.4f} | {t['shape_dev']:.2f} | "
                    f"{t['mae_vol']:.2f} |")
    for name, vals in lines.items():
        t = tests[name]
        rows.append(f"| {name} | | | 0 | {vals['mae_pos']:.4f} | {vals['mae_pos']:.4f} | {vals['shape_dev']:.2f} | {vals['mae_vol']:.2f} | "
                    f"{t['mae_pos']:.4f} | {t['shape_dev']:.2f} | {t['mae_vol']:.2f} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--init-from", default=None, help="checkpoint the finetune variant starts from")
    p.add_argument("--joint", nargs="+", default=None, help="other train.lmdb files of the joint variant")
    add_run_arguments(p, cpu_minutes=15.0, val_structures=300, every=100, out="results/data_variants")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not args.render and run_all(runs(args), out, jobs=args.jobs):
        print("some runs stopped; run the same command again to continue them", file=sys.stderr)
        return 1
    curves = {n: records(out / n) for n in args.variants}
    lines = reference_lines(args.data, args.val_structures)
    tests = test_scores(out, args.variants, args.data)
    (out / "variants.md").write_text(table(curves, tests, lines, args), encoding="utf-8")
    (out / "variants.json").write_text(json.dumps({"curves": curves, "lines": lines, "test": tests,
                                                   "variants": VARIANTS}, indent=2))
    plot_curves(curves, lines, out / "variants.png", f"{Path(args.data).name}: validation per data variant, "
                f"{args.cpu_minutes:g} CPU-min each")
    print((out / "variants.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
