"""Does a comparison's answer move with its cap? Two comparisons, side by side, run by run.

Two ``results.json`` records of ``compare_baselines.py`` are read: the same data, the same
evaluation and batch (validation interval and subset, step cap), and different stopping rules: a
different cap of CPU time per run and, optionally, a different early-stopping patience (none: every
run trains to its cap) or learning-rate schedule (``--lr-schedule``: one for every model). For every
(model, seed) run that both hold, the script prints:

- what each run did under each budget: optimiser steps, CPU-minutes, what stopped it, its best
  validation coordinate MAE;
- its test errors (coordinates, shape, volume) under each budget and their relative change from the
  smaller cap to the larger one;
- the models ranked by mean test coordinate MAE under each budget (over the seeds both records hold).

The learning rate decays over the cap (cosine), so a run that early-stopped under both caps shows
how much the cap itself changes the result; a run that hit the smaller cap shows what the extra
time bought; a run without early stopping always ends at the lowest rate. Nothing is trained.

Usage::

    python benchmarks/cap_sensitivity.py SMALL_CAP/results.json LARGE_CAP/results.json [--out table.md]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from e3relax.benchmark.run_notes import stopped_by
from e3relax.benchmark.saved import same_comparison
from e3relax.benchmark.tables import markdown_table
from e3relax.metrics import MAE_POS, MAE_VOL, SHAPE_DEV

METRICS = ((MAE_POS, "coordinates (Å)"), (SHAPE_DEV, "shape (Å²)"), (MAE_VOL, "volume (Å³)"))
CAP_KEYS = ("cpu_s", "wall_s")
RULE_KEYS = (*CAP_KEYS, "patience", "lr_schedule")


class RecordError(ValueError):
    """A record that cannot be read or compared (the message names the file and the reason)."""


def load(path: Path) -> dict[str, Any]:
    """One comparison record, checked for what this script reads."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path}: cannot read a comparison record ({exc})") from None
    if not isinstance(rec, dict) or not {"meta", "models"} <= set(rec):
        raise RecordError(f"{path}: not a compare_baselines.py results.json (no 'meta' and 'models')")
    cap = cap_seconds(rec)
    if not cap:
        raise RecordError(f"{path}: its budget has no CPU-time or wall-time cap to compare")
    return rec


def cap_seconds(rec: Mapping[str, Any]) -> float | None:
    budget = rec["meta"].get("budget", {})
    return next((float(budget[k]) for k in CAP_KEYS if budget.get(k)), None)


def check_comparable(small: Mapping[str, Any], large: Mapping[str, Any], names: Sequence[str]) -> None:
    """Same data and evaluation, any cap, patience and schedule; the first must have the smaller cap."""
    if same_comparison(small["meta"]["dataset"]) != same_comparison(large["meta"]["dataset"]):
        raise RecordError(f"{names[1]}: its dataset differs from {names[0]}'s")
    rules = [{k: v for k, v in r["meta"]["budget"].items() if k not in RULE_KEYS} for r in (small, large)]
    if rules[0] != rules[1]:
        diff = sorted(k for k in set(rules[0]) | set(rules[1]) if rules[0].get(k) != rules[1].get(k))
        raise RecordError(f"{names[1]}: its budget differs from {names[0]}'s in more than its stopping rules "
                          f"({', '.join(diff)})")
    if cap_seconds(small) >= cap_seconds(large):
        raise RecordError(f"{names[0]}: its cap ({cap_seconds(small):.0f} s) is not smaller than "
                          f"{names[1]}'s ({cap_seconds(large):.0f} s); give the smaller cap first")


def paired_runs(small: Mapping[str, Any], large: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(model key, label, seed) of every run both records hold, in the larger record's order."""
    out = []
    for key, entry in large["models"].items():
        other = small["models"].get(key, {}).get("seeds", {})
        out += [(key, entry["label"], s) for s in sorted(entry["seeds"], key=int) if s in other]
    return out


def budget_label(rec: Mapping[str, Any]) -> str:
    """'1 CPU-h, patience 10' or '0.5 CPU-h, no early stop, cosine for all'."""
    budget = rec["meta"]["budget"]
    unit = "CPU-h" if budget.get("cpu_s") else "h"
    stop = f"patience {budget['patience']}" if budget.get("patience") else "no early stop"
    shared = f", {budget['lr_schedule']} for all" if budget.get("lr_schedule") else ""
    return f"{cap_seconds(rec) / 3600:g} {unit}, {stop}{shared}"


def change(a: float, b: float) -> str:
    return "–" if not (math.isfinite(a) and math.isfinite(b)) or a == 0 else f"{100 * (b - a) / a:+.1f}%"


def run_table(small: Mapping[str, Any], large: Mapping[str, Any]) -> str:
    caps = [budget_label(r) for r in (small, large)]
    body = []
    for key, label, seed in paired_runs(small, large):
        recs = [r["models"][key]["seeds"][seed] for r in (small, large)]
        for cap, rec, budget in zip(caps, recs, (small["meta"]["budget"], large["meta"]["budget"])):
            cpu = rec.get("time_used_s")
            body.append([label, seed, cap, f"{rec['steps']:,}", "–" if cpu is None else f"{cpu / 60:.1f}",
                         stopped_by(rec, budget), f"{rec['best_val']:.4f}",
                         *(f"{rec['metrics'][m]:.4f}" for m, _ in METRICS)])
        body.append([label, seed, "change", "", "", "", change(recs[0]["best_val"], recs[1]["best_val"]),
                     *(change(recs[0]["metrics"][m], recs[1]["metrics"][m]) for m, _ in METRICS)])
    return markdown_table(["Model", "Seed", "Budget", "Steps", "CPU-min", "Stopped by",
                           "Best val. coordinates (Å)", *(f"Test {name}" for _, name in METRICS)], body)


def ranking(small: Mapping[str, Any], large: Mapping[str, Any]) -> tuple[str, bool]:
    """Models by mean test coordinate MAE under each cap, and whether the order is the same."""
    pairs = paired_runs(small, large)
    orders = []
    for rec in (small, large):
        means: dict[str, list[float]] = {}
        for key, label, seed in pairs:
            means.setdefault(label, []).append(rec["models"][key]["seeds"][seed]["metrics"][MAE_POS])
        orders.append(sorted(((float(np.mean(v)), k) for k, v in means.items())))
    lines = [f"- {budget_label(r)}: " + ", ".join(f"{k} {m:.4f}" for m, k in order)
             for r, order in zip((small, large), orders)]
    same = [k for _, k in orders[0]] == [k for _, k in orders[1]]
    lines.append("- the order is the same under both budgets" if same else "- the order differs between the budgets")
    return "\n".join(lines), same


def report(small: Mapping[str, Any], large: Mapping[str, Any]) -> str:
    if not paired_runs(small, large):
        raise RecordError("the two records hold no (model, seed) run in common")
    text, _ = ranking(small, large)
    return (f"{run_table(small, large)}\n\nTest coordinate MAE by model (mean over the seeds in both):\n\n"
            f"{text}\n")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("small", type=Path, help="results.json of the comparison with the smaller cap")
    p.add_argument("large", type=Path, help="results.json of the comparison with the larger cap")
    p.add_argument("--out", type=Path, help="also write the report (markdown) here")
    args = p.parse_args(argv)
    try:
        small, large = load(args.small), load(args.large)
        check_comparable(small, large, [str(args.small), str(args.large)])
        text = report(small, large)
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
