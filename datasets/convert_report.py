"""The validation report of a conversion (``report.json``) and its printed summary.

Report fields:
    format_version, layout, src, settings (graph, ratio, seed, keep_frame, thresholds, ...);
    counts: items, converted, skipped, by_reason {code: n}, splits {split: n}, with_warnings, and
        frames {converted, parents, skipped, held_out} when items carried trajectory frames (frame
        pairs are not items; they are counted in splits under train_frames);
    skipped: [{id, code, reason, source}] for every item not converted;
    warnings: {id: [message, ...]} (short distances and other non-fatal findings);
    rotation_removed_deg: {id: angle} rigid rotation stripped from each relaxed structure;
    rotation: {over_1deg, over_10deg} fractions of converted pairs, and the maximum;
    throughput: seconds, items processed in this run, pairs_per_s, workers.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

#: codes of skipped items and what they mean
REASONS = {
    "missing_partner": "one side of the pair (or a required file) is missing",
    "unreadable": "a file could not be read or parsed",
    "atom_count": "unrelaxed and relaxed atom counts differ",
    "species": "species sequences differ",
    "non_finite": "NaN or infinite positions or cell",
    "degenerate_cell": "cell volume practically zero",
    "coincident": "two atoms practically coincide",
    "element": "atomic number outside 1..118",
    "handedness": "cell handedness flips between the two sides",
    "duplicate_id": "an earlier item had the same id",
    "error": "unexpected error while building the record",
}


def chunk_entries(results: list[dict]) -> dict[str, list[dict]]:
    """Split worker results into report entries (record bytes already removed)."""
    converted, skipped = [], []
    for r in results:
        extra = {k: r[k] for k in ("frame", "parent", "frames_held_out", "elements") if r.get(k)}
        if r["ok"]:
            converted.append({**{k: r[k] for k in ("id", "split", "natoms", "rotation_deg", "warnings", "labelled")},
                              **extra})
        else:
            skipped.append({**{k: r.get(k, "") for k in ("id", "code", "reason", "source")},
                            **{k: v for k, v in extra.items() if k in ("frame", "parent")}})
    return {"converted": converted, "skipped": skipped}


def frame_counts(converted: list[dict], skipped: list[dict]) -> dict[str, int]:
    """Trajectory-frame pairs: written, skipped (invalid), and held out with a validation/test parent."""
    return {"converted": sum(1 for e in converted if e.get("frame")),
            "parents": len({e["parent"] for e in converted if e.get("frame")}),
            "skipped": sum(1 for e in skipped if e.get("frame")),
            "held_out": sum(int(e.get("frames_held_out", 0)) for e in converted)}


def build_report(done: Mapping[int, dict], fingerprint: Mapping[str, Any], source: Mapping[str, Any],
                 split_names: list[str], processed: int, seconds: float, workers: int) -> dict:
    """Merge chunk reports (in chunk order) into the conversion report."""
    entries = [e for c in sorted(done) for e in done[c]["converted"]]
    skipped_all = [e for c in sorted(done) for e in done[c]["skipped"]]
    frames = frame_counts(entries, skipped_all)
    splits = Counter(e["split"] for e in entries)
    converted = [e for e in entries if not e.get("frame")]  # items: the pairs themselves
    skipped = [e for e in skipped_all if not e.get("frame")]
    angles = {e["id"]: e["rotation_deg"] for e in converted if e.get("rotation_deg") is not None}
    n_ang = max(len(angles), 1)
    warnings = {e["id"]: e["warnings"] for e in converted if e["warnings"]}
    return {
        "format_version": fingerprint["format_version"],
        "layout": source["layout"],
        "src": source["src"],
        "settings": {k: v for k, v in fingerprint.items() if k not in ("format_version", "layout")},
        "counts": {
            "items": len(converted) + len(skipped),
            "converted": len(converted),
            "skipped": len(skipped),
            "by_reason": dict(sorted(Counter(e["code"] for e in skipped).items())),
            "splits": {s: splits.get(s, 0) for s in split_names},
            "with_warnings": len(warnings),
            "unlabelled": sum(1 for e in converted if not e.get("labelled", True)),
            **({"frames": frames} if any(frames.values()) else {}),
        },
        "skipped": skipped_all,
        "warnings": warnings,
        "rotation": {
            "over_1deg": sum(a > 1.0 for a in angles.values()) / n_ang,
            "over_10deg": sum(a > 10.0 for a in angles.values()) / n_ang,
            "max_deg": max(angles.values(), default=0.0),
        },
        "rotation_removed_deg": angles,
        "throughput": {
            "seconds": round(seconds, 3),
            "items_this_run": processed,
            "pairs_per_s": round(processed / seconds, 2) if seconds > 0 else None,
            "workers": workers,
        },
    }


def log_summary(report: Mapping[str, Any], out: Path) -> None:
    """Log the counts at the end of a conversion in one line (the CLI prints :func:`format_summary`)."""
    c = report["counts"]
    log.info("converted %d of %d items into %s; skipped %s; report %s", c["converted"], c["items"], out,
             c["by_reason"] or "none", Path(out) / "report.json")


def format_summary(report: Mapping[str, Any], out: Path | str) -> str:
    """Human-readable counts: converted, skipped by reason, per split, warnings, rotation."""
    c = report["counts"]
    lines = [f"converted {c['converted']} of {c['items']} items into {out} "
             f"({', '.join(f'{s}: {n}' for s, n in c['splits'].items())})"]
    for code, n in c["by_reason"].items():
        lines.append(f"  skipped {n:6d}  {code}: {REASONS.get(code, '')}")
    if "frames" in c:
        f = c["frames"]
        lines.append(f"  {f['converted']} trajectory-frame pairs from {f['parents']} training pairs "
                     f"(train_frames); {f['held_out']} frames of validation/test pairs not written; "
                     f"{f['skipped']} frames skipped")
    lines.append(f"  {c['with_warnings']} converted pairs carry warnings (see report.json)")
    rot = report["rotation"]
    lines.append(f"  rigid rotation removed: {100 * rot['over_1deg']:.1f}% of pairs > 1 deg, "
                 f"{100 * rot['over_10deg']:.1f}% > 10 deg")
    tp = report["throughput"]
    if tp["pairs_per_s"]:
        lines.append(f"  {tp['items_this_run']} items in {tp['seconds']:.1f} s ({tp['pairs_per_s']} pairs/s, "
                     f"{tp['workers']} workers)")
    lines.append(f"  report: {Path(out) / 'report.json'}")
    return "\n".join(lines)
