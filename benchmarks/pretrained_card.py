"""The model card of a pretrained E3Relax ensemble (``train_pretrained.py finalize``).

A card states what a user needs to trust the checkpoint: the data and split, the model and the
recipe, how long each member trained (steps, CPU-hours, whether validation reached the plateau of
the compare rule), the learning curves to that point, and the test errors of every member and of
the ensemble beside the Dummy and the atomic-volume prior, with the ratios the goals are stated in.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

#: test columns of the card: (key, label, decimals)
COLUMNS = (("mae_pos", "coordinates (Å)", 4), ("shape_dev", "shape (Å²)", 2), ("mae_vol", "volume (Å³)", 2))
#: issue goals on each set: the error as a fraction of the Dummy's
GOALS = {"pnictides": {"mae_pos": 0.5, "shape_dev": 0.5, "mae_vol": 0.25},
         "srnbh": {"mae_pos": 0.8, "shape_dev": 0.6, "mae_vol": 0.6}}


def member_record(run_dir: Path) -> dict[str, Any]:
    """What ``train_pretrained.py train`` wrote of one member (``trained.json``), or {}."""
    path = run_dir / "trained.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _stop_reason(rec: Mapping[str, Any]) -> str:
    if not rec:
        return "no record"
    if rec.get("time_limit_hit"):
        return f"hit the cap of {rec.get('budget_min'):g} CPU-min"
    return "early stop (no better validation within the patience)"


def training_lines(members: Sequence[str], records: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = ["| member | optimiser steps | CPU-hours | best validation coordinates (Å) | stopped by | plateau (compare rule) | started from |",
            "|---|---:|---:|---:|---|---|---|"]
    for m, r in zip(members, records):
        hours = (r.get("time_used_s") or 0) / 3600
        best = r.get("best_val")
        rows.append(f"| {m} | {r.get('iteration', '?')} | {hours:.2f} | "
                    f"{best:.4f} | {_stop_reason(r)} | {'yes' if r.get('converged') else 'no'} | "
                    f"{_started_from(r)}"
                    f"{'; stopped and resumed (the last budget counts)' if r.get('resumed') else ''} |"
                    if best is not None else f"| {m} | ? | ? | ? | no record | ? | ? |")
    return rows


def _started_from(rec: Mapping[str, Any]) -> str:
    if not rec.get("init_from"):
        return "the recipe initialisation"
    earlier = (rec.get("training") or {}).get("earlier_time_used_s")
    trained = f", trained {earlier / 3600:.2f} CPU-hours before" if earlier is not None else ""
    return f"{Path(rec['init_from']).name}{trained}"


def training_hours(records: Sequence[Mapping[str, Any]]) -> str:
    """CPU-hours of this round of training and, when every member's starting weights record theirs,
    in all."""
    hours = sum((r.get("time_used_s") or 0) for r in records) / 3600
    text = f"{hours:.2f} CPU-hours in all"
    if not any(r.get("init_from") for r in records):
        return text
    earlier = [(r.get("training") or {}).get("earlier_time_used_s") if r.get("init_from") else 0.0
               for r in records]
    if any(e is None for e in earlier):
        return f"{hours:.2f} CPU-hours in this round, after training of unrecorded length"
    total = hours + sum(earlier) / 3600
    return f"{hours:.2f} CPU-hours in this round, {total:.2f} in all with the training the members continued"


def test_lines(name: str, members: Mapping[str, Mapping[str, float]], ensemble: Mapping[str, float],
               references: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Rows: each member, the ensemble, the references; columns: each error and its ratio to the Dummy."""
    dummy = references["Dummy"]
    head = "| | " + " | ".join(f"{lab} | ÷ Dummy" for _, lab, _ in COLUMNS) + " |"
    rows = [head, "|---|" + "---:|---:|" * len(COLUMNS)]
    for label, vals in [*members.items(), ("ensemble (mean of the members)", ensemble), *references.items()]:
        cells = [f"{vals[k]:.{d}f} | {vals[k] / dummy[k]:.2f}" for k, _, d in COLUMNS]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    goals = GOALS.get(name)
    if goals:
        met = [f"{lab.split(' ')[0]} at most {goals[k]:.0%} of the Dummy's: "
               f"{'met' if ensemble[k] <= goals[k] * dummy[k] else 'missed'} ({ensemble[k] / dummy[k]:.0%})"
               for k, lab, _ in COLUMNS]
        rows += ["", "Goals for the ensemble on this test split: " + "; ".join(met) + "."]
    prior = references.get("atomic-volume prior")
    if prior:
        below = [f"{lab.split(' ')[0]} {'yes' if ensemble[k] < prior[k] else 'no'} ({ensemble[k]:.{d}f} against "
                 f"{prior[k]:.{d}f})" for k, lab, d in COLUMNS]
        rows += ["", "Below the atomic-volume prior: " + "; ".join(below) + "."]
    return rows


def card(name: str, *, report: Mapping[str, Any], layout: str, config: Mapping[str, Any], graph: Any,
         members: Sequence[Path], records: Sequence[Mapping[str, Any]], member_tests: Mapping[str, Mapping[str, float]],
         ensemble: Mapping[str, float], references: Mapping[str, Mapping[str, float]],
         quality: Mapping[str, float], figure: str | None, command: str, frame: str = "canonical") -> str:
    """The card's markdown."""
    c = report["counts"]
    where = "the canonical one" if frame == "canonical" else "the datasets' own cells, as trained"
    lines = [
        f"# Pretrained E3Relax: `{name}`", "",
        f"- **Data**: `{layout}` layout of the public `{name}` DFT relaxation set "
        f"({c['items']} items, {c['converted']} valid pairs; skipped: {c['by_reason']}).",
        f"- **Split**: seeded id-hash split 80:10:10 (`e3relax data convert --seed 0`): train {c['splits']['train']}, "
        f"val {c['splits']['val']}, test {c['splits']['test']} (held out; metrics below).",
        f"- **Model**: `{json.dumps(config['model'])}`, float32, EMA weights; graph `{graph}`.",
        f"- **Recipe**: the CPU recipe (`benchmarks/configs/train_e3relax_cpu.yaml`): lr {config['optim']['lr']} "
        f"({config['schedule'].get('lr_schedule')} over the cap, {config['schedule'].get('warmup_steps')} warmup steps), "
        f"batch {config.get('data', {}).get('batch_size', '?')}, validation every {config['schedule']['epoch_length']} steps, early stop "
        f"after {config['schedule'].get('early_stop_patience')} validations without improvement.",
        f"- **Training**: `{command}`; one CPU thread per member, no GPU; {training_hours(records)}.",
        "- **Files**: " + ", ".join(f"`{m.name}` ({m.stat().st_size / 1e6:.2f} MB)" for m in members), "",
        "## Training of each member", "", *training_lines([m.stem for m in members], records), "",
    ]
    if figure:
        lines += [f"![validation curves of the members]({figure})", ""]
    lines += ["## Test split: members, ensemble and references", "",
              "Means over structures, through `e3relax evaluate` with the settings `predict` uses (symmetry "
              f"projection on; frame: {where}); "
              "the prior is the input scaled to the atomic-volume fit of the training split.", "",
              *test_lines(name, member_tests, ensemble, references), "",
              "## Uncertainty of the ensemble (test split)", ""]
    if quality.get("spearman") == quality.get("spearman"):  # not NaN
        lines += [f"- RMS spread of the members' positions vs actual coordinate MAE: Spearman {quality['spearman']:.3f}; "
                  f"flagging the 10% most uncertain catches {quality['recall_worst']:.0%} of the 10% worst (random: 10%).",
                  f"- Flag threshold (90th percentile of the validation uncertainty): {quality['threshold']:.4f} Å; it flags "
                  f"{quality['thr_flagged_fraction']:.0%} of test structures and {quality['thr_recall_worst']:.0%} of the 10% worst."]
    else:
        lines += ["- One member: no ensemble spread."]
    return "\n".join(lines) + "\n"
