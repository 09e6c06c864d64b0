"""A comparison's ``results.json`` on disk: merge seeds run as separate comparisons, redraw the
learning curves, and rewrite ``results.md`` / ``results.csv`` without training anything."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from e3relax.benchmark import figures, tables

__all__ = ["merge_results", "learning_curves", "render_existing", "same_comparison"]


def same_comparison(meta: Any) -> str:
    """What makes two comparisons' data or budget the same: everything but where the data lies, so a
    comparison continues from (or merges) a copy of a results.json with the same data at another path."""
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k not in ("source", "folder")}
    return json.dumps(meta, sort_keys=True)


def merge_results(base: dict[str, Any], other: dict[str, Any], source: str = "") -> dict[str, Any]:
    """Add the (model, seed) records of ``other`` that ``base`` lacks (seeds run as separate comparisons),
    and its CHGNet comparison and energy check when ``base`` has none.

    Raises:
        ValueError: when the two were run on different data or with different budgets (where the
            data lies does not count).
    """
    for key in ("dataset", "budget"):
        if same_comparison(base["meta"][key]) != same_comparison(other["meta"][key]):
            raise ValueError(f"cannot merge {source}: its {key} differs ({other['meta'][key]} vs {base['meta'][key]})")
    for key, entry in other["models"].items():
        mine = base["models"].setdefault(key, {**entry, "seeds": {}})
        for seed, rec in entry["seeds"].items():
            mine["seeds"].setdefault(seed, rec)
    if not base.get("chgnet") and other.get("chgnet"):
        base["chgnet"], base["energy"] = other["chgnet"], other.get("energy")
    seeds = sorted({int(s) for e in base["models"].values() for s in e["seeds"]})
    base["meta"]["seeds"] = seeds
    base["meta"].setdefault("merged_from", []).append(source)
    return base


def learning_curves(results: dict[str, Any], fig_dir: Path) -> Path | None:
    """``fig_dir/learning_curves.png``: validation coordinate MAE of every (model, seed) run, ablations
    included, against the training structures seen; None when no run recorded a validation."""
    histories = {entry["label"].split(" (")[0]: {int(s): rec.get("val_history", []) for s, rec in entry["seeds"].items()}
                 for entry in results["models"].values()}
    if not any(h for runs in histories.values() for h in runs.values()):
        return None
    name = results["meta"]["dataset"]["name"]
    return figures.learning_curves(histories, int(results["meta"]["budget"]["batch_size"]),
                                   fig_dir / "learning_curves.png", dummy=results["meta"].get("val_dummy_mae_pos"),
                                   title=f"{name}: validation coordinate MAE, mean over structures (all seeds)")


def render_existing(out: Path, merge: Sequence[Path] = ()) -> str:
    """Rewrite ``results.md``, ``results.csv`` and ``figures/learning_curves.png`` of ``out`` from its
    ``results.json`` (after merging the ``results.json`` of each folder in ``merge`` into it); return
    the markdown."""
    path = Path(out) / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the comparison first")
    results = json.loads(path.read_text(encoding="utf-8"))
    for folder in merge:
        other = json.loads((Path(folder) / "results.json").read_text(encoding="utf-8"))
        results = merge_results(results, other, str(folder))
    if merge:
        path.write_text(json.dumps(results, indent=1, allow_nan=True), encoding="utf-8")
    md = tables.render(results)
    (Path(out) / "results.md").write_text(md, encoding="utf-8")
    tables.write_csv(results, Path(out) / "results.csv")
    learning_curves(results, Path(out) / "figures")
    return md
