"""Tables of a comparison in the paper's format (Tables 1-3), plus efficiency, CHGNet and energy tables.

``results`` is the JSON-able document the comparison writes (``results.json``)::

    {"models": {key: {"label", "ablation", "seeds": {seed: record}}}, "dummy": {...}, "prior": {...},
     "chgnet": {...} | None, "energy": {...} | None, "meta": {...}}

where a seed record holds ``metrics`` (test means), ``match``, ``timing``, ``parameters``,
``train_seconds``, ``steps``, ``converged``... (:mod:`e3relax.benchmark.runner`).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from e3relax.benchmark.run_notes import nonfinite_note, stopped_by
from e3relax.benchmark.suite import REFERENCE_MODEL, SAME_ARCHITECTURE
from e3relax.metrics import MAE_POS, MAE_VOL, SHAPE_DEV

__all__ = ["COLUMNS", "aggregate", "main_rows", "improvement", "gains", "plain_summary", "markdown_table", "write_csv", "render", "match_footnote"]

#: (key, header) of the accuracy columns; the first three are the paper's, lower is better for them
COLUMNS = ((MAE_POS, "Coord. MAE (Å)"), (SHAPE_DEV, "Shape dev. (Å²)"), (MAE_VOL, "Volume MAE (Å³)"),
           ("match_strict", "Match strict"), ("match_loose", "Match loose"), ("spg_match", "Space group agree"))
_LOWER_BETTER = (MAE_POS, SHAPE_DEV, MAE_VOL)
PRIOR_LABEL = "Atomic-volume prior"
#: the floors every model is measured against: (results key, label)
FLOORS = (("dummy", "Dummy"), ("prior", "prior"))


def _values(seeds: Mapping[str, Mapping[str, Any]], key: str) -> list[float]:
    out = []
    for rec in seeds.values():
        v = rec.get("metrics", {}).get(key, rec.get("match", {}).get(key))
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out.append(float(v))
    return out


def aggregate(seeds: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[float, float, int]]:
    """``{column: (mean, sample std (NaN for one seed), number of seeds)}`` over the seed records."""
    out = {}
    for key, _ in COLUMNS:
        v = _values(seeds, key)
        mean = float(np.mean(v)) if v else math.nan
        std = float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
        out[key] = (mean, std, len(v))
    return out


_RATES = ("match_strict", "match_loose", "spg_match")


def _fmt(mean: float, std: float, digits: int = 4, rate: bool = False) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    if rate:
        return f"{100 * mean:.1f}%" if math.isnan(std) else f"{100 * mean:.1f} ± {100 * std:.1f}%"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _cell(values: Mapping[str, Any], key: str) -> str:
    return _fmt(values.get(key, math.nan), math.nan, rate=key in _RATES)


def main_rows(results: Mapping[str, Any], ablation: bool = False) -> list[tuple[str, str, dict]]:
    """``(key, label, aggregate)`` of the models (or the ablations) in table order."""
    rows = []
    for key, entry in results["models"].items():
        if bool(entry.get("ablation")) == ablation:
            rows.append((key, entry["label"], aggregate(entry["seeds"])))
    return rows


def improvement(rows: Sequence[tuple[str, str, dict]]) -> tuple[dict[str, float], dict[str, str]]:
    """Improvement of E3Relax over the second best (the best other baseline) per column.

    For the paper's three errors it is relative, ``100 (best - E3Relax) / best`` (%); for the rates
    (match, space group) it is the difference in percentage points.

    Returns:
        ({column: improvement (positive: E3Relax better)}, {column: label of that baseline}).
    """
    ref = next((agg for key, _, agg in rows if key == REFERENCE_MODEL), None)
    others = [(label, agg) for key, label, agg in rows if key != REFERENCE_MODEL and key not in SAME_ARCHITECTURE]
    pct, who = {}, {}
    if ref is None or not others:
        return pct, who
    for key, _ in COLUMNS:
        cands = [(agg[key][0], label) for label, agg in others if not math.isnan(agg[key][0])]
        if not cands or math.isnan(ref[key][0]):
            continue
        lower = key in _LOWER_BETTER
        best, label = min(cands) if lower else max(cands)
        if lower and best == 0:
            continue
        pct[key] = 100.0 * ((best - ref[key][0]) / best if lower else ref[key][0] - best)
        who[key] = label
    return pct, who


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _accuracy_table(results: Mapping[str, Any], ablation: bool) -> str:
    rows = main_rows(results, ablation)
    body = [[label, *(_fmt(*agg[k][:2], rate=k in _RATES) for k, _ in COLUMNS)] for _, label, agg in rows]
    if not ablation:
        body.append(["Dummy", *(_cell(results["dummy"], k) for k, _ in COLUMNS)])
        if results.get("prior"):
            body.append([PRIOR_LABEL, *(_cell(results["prior"], k) for k, _ in COLUMNS)])
        pct, who = improvement(rows)
        if pct:
            body.append(["Improvement (E3Relax vs second best)",
                         *(f"{pct[k]:+.1f}{' pp' if k in _RATES else '%'} (vs {who[k]})" if k in pct else "n/a"
                           for k, _ in COLUMNS)])
        ch = results.get("chgnet")
        if ch:
            body.append([f"CHGNet + FIRE (first {ch['num_structures']} test structures)†",
                         *(_cell({**ch["metrics"], **ch.get("match", {})}, k) for k, _ in COLUMNS)])
    return markdown_table(["Model", *(h for _, h in COLUMNS)], body)


def gains(agg: Mapping[str, tuple], floor: Mapping[str, Any]) -> dict[str, float]:
    """``100 (floor - model) / floor`` (%) for the paper's three errors: positive means the model
    is better than the floor (the Dummy, or the atomic-volume prior)."""
    out = {}
    for key in _LOWER_BETTER:
        ref, val = floor.get(key, math.nan), agg[key][0]
        if ref is not None and not math.isnan(ref) and ref > 0 and not math.isnan(val):
            out[key] = 100.0 * (ref - val) / ref
    return out


def _gain_table(results: Mapping[str, Any], ablation: bool) -> tuple[str, list[str]]:
    """Each model's improvement over the Dummy and over the prior, and the models that do not beat
    the prior on some error (``(markdown, ["label: coordinates, volume", ...])``)."""
    floors = [(key, label) for key, label in FLOORS if results.get(key)]
    names = {key: dict(COLUMNS)[key].split(" (")[0] for key in _LOWER_BETTER}  # "Coord. MAE", ...
    headers = ["Model"] + [f"{names[key]} vs {label}" for key in _LOWER_BETTER for _, label in floors]
    body, behind = [], []
    for _, label, agg in main_rows(results, ablation):
        row, worse = [label], []
        per_floor = {fk: gains(agg, results[fk]) for fk, _ in floors}
        for key in _LOWER_BETTER:
            for fk, _ in floors:
                g = per_floor[fk].get(key)
                row.append("n/a" if g is None else f"{g:+.1f}%")
                if fk == "prior" and g is not None and g <= 0:
                    worse.append(names[key])
        body.append(row)
        if worse:
            behind.append(f"{label}: {', '.join(worse)}")
    return markdown_table(headers, body), behind


def _gain_section(results: Mapping[str, Any], ablation: bool) -> list[str]:
    if not results.get("prior") or not main_rows(results, ablation):
        return []
    table, behind = _gain_table(results, ablation)
    text = ("Improvement of each model over the Dummy (the unrelaxed input) and over the atomic-volume "
            "prior (the input scaled isotropically to the least-squares volume of its composition, "
            "fitted on the training split): 100 (floor - model) / floor, positive is better.")
    parts = [text, "", table, ""]
    if behind:
        parts += ["Not better than the prior (so nothing learned there beyond the volume): "
                  + "; ".join(behind) + ".", ""]
    else:
        parts += ["Every model beats the prior on all three errors.", ""]
    return parts


def plain_summary(results: Mapping[str, Any]) -> str:
    """A few plain lines for the end of a run: per paper error, the best model (Table 1-2 models,
    mean over seeds) and how far below the Dummy and the prior it is."""
    rows = [(label, agg) for _, label, agg in main_rows(results, False)]
    if not rows:
        return "No model finished; see the log."
    lines = []
    for key in _LOWER_BETTER:
        scored = [(agg[key][0], label) for label, agg in rows if not math.isnan(agg[key][0])]
        if not scored:
            continue
        best, label = min(scored)
        name = dict(COLUMNS)[key]
        parts = [f"{name}: {label} is best with {best:.4g}"]
        for fk, flabel in FLOORS:
            ref = (results.get(fk) or {}).get(key)
            if ref:
                g = 100.0 * (ref - best) / ref
                parts.append(f"{abs(g):.0f}% {'below' if g >= 0 else 'above'} the {flabel} ({ref:.4g})")
        lines.append(", ".join(parts) + ".")
    return "\n".join(lines)


def _cpu_seconds(rec: Mapping[str, Any]) -> float:
    """CPU-seconds of training of one run's own process (NaN when its budget was counted in wall time)."""
    used = rec.get("time_used_s")
    return float(used) if rec.get("time_clock") == "cpu" and used is not None else math.nan


def _train_seconds(seeds: list[Mapping[str, Any]]) -> str:
    """Mean wall-clock training seconds over seeds; "≥" when a seed resumed a run whose earlier wall
    time is unknown (records before ``train_seconds_partial``: any resumed run), since its
    process's own seconds are then a lower bound."""
    mean = f"{np.mean([s['train_seconds'] for s in seeds]):.0f}"
    return "≥" + mean if any(s.get("train_seconds_partial", s.get("resumed", False)) for s in seeds) else mean


def _efficiency_table(results: Mapping[str, Any]) -> str:
    from e3relax.benchmark.runner import convergence

    body = []
    for key, entry in results["models"].items():
        seeds = list(entry["seeds"].values())
        if not seeds:
            continue
        first = seeds[0]
        t = first["timing"]
        conv = sum(convergence([tuple(h) for h in s.get("val_history", [])])["converged"] for s in seeds)
        cpu = [_cpu_seconds(s) for s in seeds]
        body.append([entry["label"], f"{first['parameters']:,}", _train_seconds(seeds),
                     "–" if all(map(math.isnan, cpu)) else f"{np.nansum(cpu) / 3600:.2f}",
                     "/".join(str(s["steps"]) for s in seeds), f"{t['batch1_ms']:.1f}", f"{t['batched_ms']:.1f}",
                     f"{conv}/{len(seeds)}", f"{sum(bool(s.get('wall_budget_hit')) for s in seeds)}/{len(seeds)}"])
    return markdown_table(["Model", "Parameters", "Train time (s, mean)", "Train CPU-hours (all seeds)",
                           "Steps (per seed)", "Inference ms/structure (batch 1)", "Inference ms/structure (batched)",
                           "Converged in budget (seeds)", "Budget cap hit (seeds)"], body)


def _runs_table(results: Mapping[str, Any]) -> str:
    """One row per (model, seed): steps, best step, CPU-minutes, what stopped it and whether its
    validation reached the plateau of the compare rule (an early stop is not one by itself: the run
    may still have been improving on the scale of its whole length)."""
    budget = results["meta"]["budget"]
    body = []
    for entry in results["models"].values():
        for seed, rec in sorted(entry["seeds"].items(), key=lambda kv: int(kv[0])):
            cpu = _cpu_seconds(rec)
            body.append([entry["label"], seed, f"{rec['steps']:,}", f"{rec.get('best_step') or 0:,}",
                         "–" if math.isnan(cpu) else f"{cpu / 60:.1f}", stopped_by(rec, budget),
                         "yes" if rec.get("converged") else "no"])
    return markdown_table(["Model", "Seed", "Steps", "Best step", "CPU-min of training", "Stopped by",
                           "Plateau (compare rule)"], body)


def _processes(ch: Mapping[str, Any]) -> str:
    n = ch.get("processes")
    return f"; run in {n} one-thread processes" if n and n > 1 else ""


def _chgnet_table(results: Mapping[str, Any]) -> str:
    ch = results["chgnet"]
    body = []
    for label, m, ms in ch["rows"]:
        body.append([label, *(_fmt(m.get(k, math.nan), math.nan) for k in (MAE_POS, SHAPE_DEV, MAE_VOL)),
                     "n/a" if ms is None else f"{ms:.1f}"])
    return markdown_table(["Method (same structures)", "Coord. MAE (Å)", "Shape dev. (Å²)", "Volume MAE (Å³)",
                           "Time ms/structure"], body)


def _energy_table(results: Mapping[str, Any]) -> str:
    e = results["energy"]
    body = [["Unrelaxed input", f"{e['e_unrelaxed']:.4f}", f"{e['de_unrelaxed']:.4f}",
             f"{e['steps_from_unrelaxed_mean']:.1f} (median {e['steps_from_unrelaxed_median']:.0f}; "
             f"{e['converged_from_unrelaxed']}/{e['num_structures']} converged)"],
            ["Reference relaxed (label)", f"{e['e_reference']:.4f}", "0", "n/a"],
            ["E3Relax prediction", f"{e['e_predicted']:.4f}", f"{e['de_predicted']:.4f}",
             f"{e['steps_from_predicted_mean']:.1f} (median {e['steps_from_predicted_median']:.0f}; "
             f"{e['converged_from_predicted']}/{e['num_structures']} converged)"]]
    return markdown_table(["Structure", "CHGNet E (eV/atom, mean)", "mean abs(E - E_ref) (eV/atom)",
                           f"CHGNet FIRE steps to converge (cap {(results.get('chgnet') or {}).get('max_steps', '?')})"], body)


_MATCH_PROBLEMS = (("match_timeouts", "ran past the time limit"), ("match_errors", "made pymatgen fail"),
                   ("degenerate_cells", "had a degenerate predicted cell (nearly flat or near-zero volume)"))


def match_footnote(results: Mapping[str, Any]) -> str:
    """The footnote naming the pairs counted as unmatched without a full comparison ("" when none)."""
    from e3relax.metrics import MATCH_TIME_LIMIT

    found: dict[str, list[str]] = {k: [] for k, _ in _MATCH_PROBLEMS}
    records = [(f"{e['label']} seed {seed}", rec.get("match", {})) for e in results["models"].values()
               for seed, rec in e["seeds"].items()]
    records += [("Dummy", results.get("dummy", {})), (PRIOR_LABEL, results.get("prior") or {}),
                ("CHGNet + FIRE", (results.get("chgnet") or {}).get("match", {}))]
    for who, match in records:
        for key, _ in _MATCH_PROBLEMS:
            if match.get(key):
                found[key].append(f"{who}: {int(match[key])}")
    parts = [f"pairs that {text} ({'; '.join(found[key])})" for key, text in _MATCH_PROBLEMS if found[key]]
    if not parts:
        return ""
    return (f"‡ Counted as unmatched without a full StructureMatcher comparison (limit {MATCH_TIME_LIMIT:g} s "
            "per pair and tolerance setting; the log names each structure): " + "; ".join(parts) + ".")


def render(results: Mapping[str, Any]) -> str:
    """The markdown of ``results.md``."""
    meta = results["meta"]
    parts = [f"# Comparison on {meta['dataset']['name']} ({meta['dataset']['source']})", "",
             f"Test structures: {meta['test_structures']}; seeds: {', '.join(map(str, meta['seeds']))}; "
             f"budget per model: {meta['budget_text']}; device: {meta['device']}.",
             "Means over test structures; ± is the sample standard deviation over seeds. Match rates: "
             f"pymatgen StructureMatcher (strict: ltol 0.05, stol 0.05, 1°; loose: 0.2, 0.3, 5°; no volume "
             f"scaling) and spglib space groups (symprec 0.1) on the first {meta['match_structures']} test "
             "structures.", "", "## Accuracy (paper Tables 1-2)", "", _accuracy_table(results, False), ""]
    footnote = match_footnote(results)
    if footnote:
        parts += [footnote, ""]
    parts += _gain_section(results, False)
    if results.get("chgnet"):
        parts += ["† CHGNet + FIRE is scored on a subset of the test set; see the table below for "
                  "E3Relax and Dummy on exactly that subset.", ""]
    if any(e.get("ablation") for e in results["models"].values()):
        parts += ["## Ablations (paper Table 3)", "", _accuracy_table(results, True), ""]
        parts += _gain_section(results, True)
    failed = [f"{e['label']} seed {seed}: {msg}" for e in results["models"].values()
              for seed, msg in e.get("failed", {}).items()]
    if failed:
        parts += ["**Failed runs** (not in the tables): " + "; ".join(failed), ""]
    parts += ["## Size, training and inference", "", _efficiency_table(results), "",
              "\"Converged\" means a validation plateau within the budget, not convergence of training: a seed "
              "counts as converged when the second half of its validations improved the best validation "
              "coordinate MAE of the first half by at most 1%, and as not converged with fewer than four "
              "validations. \"Budget cap hit\" counts the seeds that the time budget stopped (a run that "
              "hit it was still improving or had not yet shown its plateau to the early-stopping rule); "
              "train time is wall-clock, across resumes (≥: a lower bound, where a resumed run's earlier wall time "
              "is unknown); CPU-hours are of each run's own process.", "",
              "### Every run", "", _runs_table(results), ""]
    note = nonfinite_note(results)
    if note:
        parts += [note, ""]
    if results.get("chgnet"):
        ch = results["chgnet"]
        parts += [f"## Against iterative relaxation (first {ch['num_structures']} test structures)", "",
                  f"CHGNet {ch['chgnet_version']} (pretrained weights from its wheel) with ASE FIRE and a "
                  f"Frechet cell filter, fmax {ch['fmax']} eV/Å, at most {ch['max_steps']} steps "
                  f"({ch['converged']}/{ch['num_structures']} converged{_processes(ch)}). E3Relax time is batch-1 "
                  f"inference on one thread; CHGNet+FIRE time is the CPU time of its one-thread process"
                  f"{'' if 'cpu_seconds_per_structure' in ch else ' (its wall time, in records older than this field)'}; "
                  f"CHGNet+FIRE takes {ch['time_ratio']:.0f}x as long per structure.", "", _chgnet_table(results), ""]
    if results.get("energy"):
        parts += ["## Energy check (paper Fig. 5)", "", _energy_table(results), ""]
    return "\n".join(parts)


def write_csv(results: Mapping[str, Any], path: str | Path) -> None:
    """``results.csv``: one row per model (incl. Dummy, improvement, CHGNet) with mean and std per column."""
    header = ["model", "key", "table", "num_seeds"] + [f"{k}_{s}" for k, _ in COLUMNS for s in ("mean", "std")]
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for ablation in (False, True):
            for key, label, agg in main_rows(results, ablation):
                n = max(a[2] for a in agg.values())
                w.writerow([label, key, "table3" if ablation else "table1", n,
                            *(f"{x:.6g}" for k, _ in COLUMNS for x in agg[k][:2])])
        w.writerow(["Dummy", "dummy", "table1", "", *(f"{x:.6g}" for k, _ in COLUMNS
                                                        for x in (results["dummy"].get(k, math.nan), math.nan))])
        if results.get("prior"):
            w.writerow([PRIOR_LABEL, "prior", "table1", "", *(f"{x:.6g}" for k, _ in COLUMNS
                                                             for x in (results["prior"].get(k, math.nan), math.nan))])
        pct, _ = improvement(main_rows(results, False))
        w.writerow(["Improvement % (E3Relax vs second best)", "improvement", "table1", "",
                    *(f"{x:.6g}" for k, _ in COLUMNS for x in (pct.get(k, math.nan), math.nan))])
        if results.get("chgnet"):
            ch = results["chgnet"]["metrics"]
            w.writerow(["CHGNet + FIRE (subset)", "chgnet_fire", "table1", "",
                        *(f"{x:.6g}" for k, _ in COLUMNS for x in (ch.get(k, math.nan), math.nan))])
