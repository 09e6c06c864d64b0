"""Conversion driver: importer items -> validation -> records -> sharded LMDB + JSON report.

``convert(importer, out)`` writes, for every split, a folder ``out/<split>.lmdb`` of shards
``shard_<chunk>.lmdb`` (format in :mod:`e3relax.datasets.lmdb_format`) and ``out/report.json``.

How it stays safe:

- Parsing and record building run in a pool of worker processes (``workers``); items are read in
  a fixed order and results consumed in that order, so the output does not depend on the number
  of workers. Splits come from the importer (published split) or from a hash of the id.
- Everything is written under ``out/.partial/`` first. Items are processed in chunks of
  ``chunk_size``; a chunk's shards are written under temporary names, then a chunk report marks
  the chunk done.
- An item with frames (``RawPair.frames``) whose pair lands in the training split also yields one
  ``(frame -> relaxed)`` pair per frame, written to ``out/train_frames.lmdb`` (record field
  ``parent``); the frames of validation and test pairs are not written, so no parent leaks. An interrupted run leaves only ``.partial``: rerunning with the same settings
  resumes after the last finished chunk, with other settings it restarts cleanly.
- Shards get their metadata record (which the reader requires) only when every chunk is done;
  then the split folders are moved to their final names and ``report.json`` is written last.
- A bad item becomes one entry of the report (id, code, reason); it never stops the conversion.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from e3relax.datasets import writer
from e3relax.datasets.convert_report import build_report, chunk_entries, log_summary
from e3relax.datasets.importers.base import Importer
from e3relax.datasets.lmdb_format import FORMAT_VERSION, SHARD_PATTERN, make_metadata
from e3relax.datasets.splits import SPLIT_NAMES, parse_ratio
from e3relax.datasets.worker import ConvertSettings, graph_params, init_worker, process

log = logging.getLogger(__name__)

PARTIAL = ".partial"
REPORT = "report.json"


def _importer_options(importer: Importer) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, bool, str, type(None))) else str(v))
            for k, v in vars(importer).items() if not k.startswith("_")}


def _fingerprint(importer: Importer, layout: str, s: ConvertSettings, chunk_size: int, limit: int | None) -> dict:
    return json.loads(json.dumps({
        "format_version": FORMAT_VERSION, "layout": layout, "importer": _importer_options(importer),
        "graph": graph_params(s.graph), "ratio": s.ratio, "seed": s.seed, "keep_frame": s.keep_frame,
        "canonical_frame": s.canonical_frame,
        "thresholds": dataclasses.asdict(s.thresholds) if s.thresholds else None,
        "chunk_size": chunk_size, "limit": limit,
    }, default=str))


def _prepare(out: Path, fingerprint: dict, overwrite: bool) -> Path:
    """Create or resume ``out/.partial``; refuse to replace a finished conversion unless ``overwrite``."""
    out.mkdir(parents=True, exist_ok=True)
    report = out / REPORT
    partial = out / PARTIAL
    if report.exists():
        if not overwrite:
            raise FileExistsError(f"'{out}' already holds a finished conversion ({REPORT}); pass --overwrite to replace it")
        old = json.loads(report.read_text(encoding="utf-8"))
        report.unlink()
        for split in old.get("counts", {}).get("splits", {}):
            writer.remove_path(out / f"{split}.lmdb")
        writer.remove_path(partial)
    state_file = partial / "state.json"
    if partial.exists():
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            state = None
        if state == fingerprint:
            log.info("resuming the interrupted conversion in '%s'", partial)
            return partial
        log.info("'%s' holds an interrupted conversion with other settings; restarting", partial)
        writer.remove_path(partial)
    (partial / "chunks").mkdir(parents=True)
    writer.write_json_atomic(state_file, fingerprint)
    return partial


def _load_chunks(partial: Path) -> dict[int, dict]:
    done = {}
    for f in sorted((partial / "chunks").glob("chunk_*.json")):
        chunk = json.loads(f.read_text(encoding="utf-8"))
        done[int(chunk["chunk"])] = chunk
    return done


def _jobs(importer: Importer, done: Mapping[int, dict], chunk_size: int, limit: int | None) -> Iterator[tuple[int, Any]]:
    for i, task in enumerate(importer.tasks()):
        if limit is not None and i >= limit:
            return
        if i // chunk_size not in done:
            yield i, task


def _flush(partial: Path, chunk: int, results: list[dict], seen: set[str]) -> dict:
    """Write one chunk's shards (one per split) and then its report; returns the chunk report."""
    by_split: dict[str, list[bytes]] = {}
    for r in results:
        if r["ok"] and r["id"] in seen:
            r.update(ok=False, code="duplicate_id", reason=f"id '{r['id']}' already converted from an earlier item")
            r.pop("data")
        seen.add(r["id"])
        if r["ok"]:
            by_split.setdefault(r["split"], []).append(r.pop("data"))
    for split, records in by_split.items():
        (partial / f"{split}.lmdb").mkdir(exist_ok=True)
        writer.write_shard(partial / f"{split}.lmdb" / SHARD_PATTERN.format(chunk), records)
    report = {"chunk": chunk, "num_items": len({r["i"] for r in results}), **chunk_entries(results)}
    writer.write_json_atomic(partial / "chunks" / f"chunk_{chunk:05d}.json", report)
    return report


def _run_pool(importer: Importer, settings: ConvertSettings, jobs: Iterator, workers: int) -> Iterator[dict]:
    if workers <= 1:
        init_worker(importer, settings, limit_threads=False)
        yield from map(process, jobs)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    # parent=...: a worker ends with this process, even when it is killed without any cleanup
    with ctx.Pool(workers, initializer=init_worker, initargs=(importer, settings, True, os.getpid())) as pool:
        yield from pool.imap(process, jobs, chunksize=4)


def _total(importer: Importer, limit: int | None) -> int | None:
    try:
        n = len(importer)
    except TypeError:
        return limit
    return n if limit is None else min(n, limit)


def _process_all(importer, settings, partial, done, chunk_size, limit, workers, progress) -> int:
    """Run every job not yet done; returns the number of items processed in this run."""
    from e3relax.progress import progress as progress_bar

    seen = {e["id"] for c in done.values() for e in c["converted"] + c["skipped"]}
    total = _total(importer, limit)
    initial = sum(c["num_items"] for c in done.values())
    bar = progress_bar(total=total, initial=initial, disable=not progress, unit="pair", desc="convert")
    current, buf, count = None, [], 0
    for results in _run_pool(importer, settings, _jobs(importer, done, chunk_size, limit), workers):
        c = results[0]["i"] // chunk_size  # an item's result, then those of its frames (if any)
        if current is not None and c != current:
            done[current] = _flush(partial, current, buf, seen)
            buf = []
        current = c
        buf.extend(results)
        count += 1
        bar.update(1)
    if buf:
        done[current] = _flush(partial, current, buf, seen)
    bar.close()
    return count


def _assemble(out: Path, partial: Path, done: dict[int, dict], split_names: list[str], meta_common: dict) -> None:
    """Add metadata to every shard, then move each split folder to ``out/<split>.lmdb``."""
    for split in split_names:
        folder = partial / f"{split}.lmdb"
        final = out / f"{split}.lmdb"
        if not folder.exists() and final.exists():
            continue  # moved by an interrupted final step of this same conversion
        folder.mkdir(exist_ok=True)
        shards = [(c, [e for e in done[c]["converted"] if e["split"] == split]) for c in sorted(done)]
        shards = [(c, ents) for c, ents in shards if ents]
        if not shards:  # an empty split is still a valid, complete database
            writer.write_shard(folder / SHARD_PATTERN.format(0), [])
            shards = [(0, [])]
        names = [SHARD_PATTERN.format(c) for c, _ in shards]
        n_split = sum(len(ents) for _, ents in shards)
        for k, (c, ents) in enumerate(shards):
            path = folder / names[k]
            if writer.count_records(path) != len(ents):
                raise RuntimeError(f"{path}: holds {writer.count_records(path)} records, its chunk report "
                                   f"{len(ents)}; remove '{partial}' and convert again")
            meta = make_metadata(natoms=[e["natoms"] for e in ents], ids=[e["id"] for e in ents],
                                 split=split, shard=k, num_shards=len(shards), split_records=n_split,
                                 extra={"shards": names, "elements": element_totals(ents)}, **meta_common)
            writer.add_metadata(path, meta)
        writer.remove_path(final)
        folder.rename(final)


def element_totals(entries: list[dict]) -> dict[str, list[int]]:
    """``{"Z": [atoms, structures]}`` over report entries that carry per-record ``elements``."""
    out: dict[str, list[int]] = {}
    for e in entries:
        for z, n in (e.get("elements") or {}).items():
            tot = out.setdefault(z, [0, 0])
            tot[0] += int(n)
            tot[1] += 1
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def convert(importer: Importer, out: str | Path, *, layout: str, graph: Any = None, workers: int = 1,
            split_ratio: str = "8:1:1", seed: int = 0, keep_frame: bool = False, thresholds: Any = None,
            chunk_size: int = 1024, limit: int | None = None, overwrite: bool = False,
            progress: bool = True, canonical_frame: float | None = None) -> dict:
    """Convert every item of ``importer`` into ``out/<split>.lmdb`` folders and ``out/report.json``.

    Args:
        importer: an :class:`Importer` instance.
        out: output folder.
        layout: importer name (recorded in metadata and report).
        graph: graph-builder spec for ``GRAPHS.build`` (default ``{"name": "periodic_multi_edge"}``).
        workers: worker processes (1: in this process).
        split_ratio: ratio for items without a published split, e.g. ``"8:1:1"``.
        seed: seed of the id-hash split.
        keep_frame: keep the relaxed structure's raw frame (no rigid-rotation removal).
        thresholds: ``e3relax.structures.ValidationThresholds`` (None: defaults).
        chunk_size: items per chunk (= per shard and split); the unit of resumption.
        limit: convert only the first ``limit`` items.
        overwrite: replace a finished conversion in ``out``.
        progress: show a progress bar.
        canonical_frame: put every pair into the frame ``predict`` uses (primitive cell, reduced
            basis, atom 0 at the origin) at this symprec (A), so a model trains on the inputs it
            will be given; None: each structure's own frame.

    Returns:
        The report (also saved as ``out/report.json``).
    """
    out = Path(out)
    settings = ConvertSettings(graph=graph if graph is not None else {"name": "periodic_multi_edge"},
                               ratio=parse_ratio(split_ratio), seed=int(seed), keep_frame=bool(keep_frame),
                               thresholds=thresholds, canonical_frame=None if canonical_frame is None
                               else float(canonical_frame))
    fingerprint = _fingerprint(importer, layout, settings, chunk_size, limit)
    partial = _prepare(out, fingerprint, overwrite)
    done = _load_chunks(partial)
    t0 = time.perf_counter()
    processed = _process_all(importer, settings, partial, done, chunk_size, limit, workers, progress)
    seconds = time.perf_counter() - t0
    seen_splits = {e["split"] for c in done.values() for e in c["converted"]}
    split_names = [s for s in SPLIT_NAMES if s in settings.ratio] + sorted(seen_splits - set(SPLIT_NAMES))
    split_names += [s for s in SPLIT_NAMES if s in seen_splits and s not in split_names]
    source = {"layout": layout, "src": str(importer.src), "importer": fingerprint["importer"],
              "keep_frame": settings.keep_frame, "canonical_frame": settings.canonical_frame, "split_ratio": settings.ratio, "seed": settings.seed}
    common = {"graph": fingerprint["graph"], "source": source}
    _assemble(out, partial, done, split_names, common)
    report = build_report(done, fingerprint, source, split_names, processed, seconds, workers)
    writer.write_json_atomic(out / REPORT, report)
    writer.remove_path(partial)
    log_summary(report, out)
    return report
