"""Reproducible generator of (unrelaxed, ML-relaxed) crystal pairs: the built-in dataset.

Item ``i`` of a run with seed ``s`` is fully determined by ``(s, i)``: a prototype and its elements
(:mod:`e3relax.datasets.prototypes`), a random symmetric strain (each component uniform in
``+-strain``) and a Gaussian rattle (``rattle`` Angstrom per component). It is then relaxed with an
interatomic potential (CHGNet by default: ASE FIRE on a ``FrechetCellFilter``, ``fmax`` eV/A,
at most ``max_steps`` steps) in one of ``workers`` processes, each with one thread.

Every finished item is appended as one JSON line to ``<out>/results.jsonl`` by the parent process,
so an interrupted run resumes by rerunning the same command: done indices are skipped and a torn
last line is ignored. At the end the converged pairs are written, sorted by index, to
``<out>/pairs.extxyz`` (or ``pairs.extxyz.gz``), alternating unrelaxed / relaxed frames with
``info['id']`` and ``info['role']``, which the ``extxyz`` importer reads; ``<out>/generation.json``
records the settings, counts and cost.
"""
from __future__ import annotations

import gzip
import io
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from ase import Atoms

from e3relax.datasets.prototypes import PROTOTYPES, build_prototype

__all__ = ["GenerateConfig", "make_item", "generate", "read_journal", "write_pairs", "RELAXERS", "add_data_parser"]

logger = logging.getLogger(__name__)

JOURNAL = "results.jsonl"
SUMMARY = "generation.json"
CONFIG = "config.json"


@dataclass
class GenerateConfig:
    """Settings of one generator run (all recorded in ``generation.json``)."""

    n: int = 300
    seed: int = 0
    strain: float = 0.08
    rattle: float = 0.1
    fmax: float = 0.05
    max_steps: int = 500
    relaxer: str = "chgnet"
    prototypes: list[str] = field(default_factory=lambda: sorted(PROTOTYPES))
    allowed_elements: list[str] | None = None


# ------------------------------------------------------------------ items
def make_item(index: int, cfg: GenerateConfig) -> tuple[str, str, Atoms]:
    """The deterministic unrelaxed structure of item ``index``: ``(id, prototype, atoms)``.

    Raises:
        ValueError: if no prototype can be built from ``cfg.allowed_elements``.
    """
    rng = np.random.default_rng([cfg.seed, index])
    names = list(cfg.prototypes)
    for _ in range(4 * len(names)):
        proto = names[int(rng.integers(len(names)))]
        atoms = build_prototype(proto, rng, cfg.allowed_elements)
        if atoms is not None:
            break
    else:
        raise ValueError(f"no prototype in {names} can be built from elements {cfg.allowed_elements}")
    if len(atoms) <= 3 and rng.random() < 0.5:  # small cells: a 2x supercell so the rattle breaks symmetry
        reps = [1, 1, 1]
        reps[int(rng.integers(3))] = 2
        atoms = atoms.repeat(reps)
    eps = rng.uniform(-cfg.strain, cfg.strain, size=(3, 3))
    eps = 0.5 * (eps + eps.T)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    atoms.positions += rng.normal(0.0, cfg.rattle, size=atoms.positions.shape)
    atoms.wrap()
    return f"gen{cfg.seed}_{index:05d}", proto, atoms


# ------------------------------------------------------------------ relaxers
class _AseRelaxer:
    """FIRE on a FrechetCellFilter (positions and cell) with a given ASE calculator."""

    def __init__(self, fmax: float, max_steps: int) -> None:
        self.fmax, self.max_steps = fmax, max_steps
        self.calc = self.make_calculator()

    def make_calculator(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, atoms: Atoms) -> tuple[Atoms, dict]:
        from e3relax.chgnet_tools import fire_relax

        res = fire_relax(atoms, self.calc, fmax=self.fmax, max_steps=self.max_steps)
        work = res.atoms
        out = Atoms(numbers=work.numbers, positions=work.positions, cell=work.cell.array, pbc=work.pbc)
        return out, {"energy_per_atom": res.energy_per_atom, "steps": res.steps, "converged": res.converged}


class ChgnetRelaxer(_AseRelaxer):
    """CHGNet (pretrained weights shipped with the ``chgnet`` package), CPU."""

    def make_calculator(self) -> Any:
        from e3relax.chgnet_tools import _calculator

        return _calculator()


class EmtRelaxer(_AseRelaxer):
    """ASE's EMT (Al, Cu, Ag, Au, Ni, Pd, Pt only): a cheap stand-in for tests."""

    def make_calculator(self) -> Any:
        from ase.calculators.emt import EMT

        return EMT()


RELAXERS: dict[str, Callable[[float, int], Callable[[Atoms], tuple[Atoms, dict]]]] = {
    "chgnet": ChgnetRelaxer,
    "emt": EmtRelaxer,
}

_WORKER: dict[str, Any] = {}


def _init_worker(cfg: GenerateConfig, parent: int | None = None) -> None:
    from e3relax.datasets.worker import die_with_parent

    if parent is not None:  # end with the process that owns the pool, as conversion workers do
        die_with_parent(parent)
    os.environ["OMP_NUM_THREADS"] = "1"
    if cfg.relaxer == "chgnet" or "torch" in sys.modules:
        import torch

        torch.set_num_threads(1)
    _WORKER["cfg"] = cfg
    _WORKER["relax"] = RELAXERS[cfg.relaxer](cfg.fmax, cfg.max_steps)


def _atoms_dict(atoms: Atoms) -> dict:
    return {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.round(8).tolist(),
            "cell": atoms.cell.array.round(8).tolist(), "pbc": [bool(p) for p in atoms.pbc]}


def _dict_atoms(d: dict) -> Atoms:
    return Atoms(numbers=d["numbers"], positions=d["positions"], cell=d["cell"], pbc=d["pbc"])


def _run_item(index: int) -> dict:
    """Build and relax item ``index`` in a worker; errors become a record with ``error``."""
    cfg: GenerateConfig = _WORKER["cfg"]
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"index": index}
    try:
        item_id, proto, atoms = make_item(index, cfg)
        rec.update(id=item_id, prototype=proto, formula=atoms.get_chemical_formula(), natoms=len(atoms))
        relaxed, info = _WORKER["relax"](atoms)
        if not (np.isfinite(relaxed.positions).all() and np.isfinite(relaxed.cell.array).all()):
            raise FloatingPointError("relaxation produced non-finite positions or cell")
        rec.update(info, unrelaxed=_atoms_dict(atoms), relaxed=_atoms_dict(relaxed))
    except Exception as exc:  # one bad item never stops the run
        rec["error"] = f"{type(exc).__name__}: {exc}"
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


# ------------------------------------------------------------------ journal and output
def read_journal(out: str | Path) -> dict[int, dict]:
    """Finished records by index; unreadable (torn) lines are ignored."""
    path = Path(out) / JOURNAL
    done: dict[int, dict] = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                done[int(rec["index"])] = rec
            except (ValueError, KeyError, TypeError):
                logger.warning("%s: ignoring an unreadable journal line", path)
    return done


def _repair_journal(path: Path) -> None:
    """Cut a torn last line (a run killed mid-write) so the next record starts on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        logger.warning("%s: dropping a torn last line (%d bytes)", path, len(data) - keep)
        with open(path, "r+b") as fh:
            fh.truncate(keep)


def write_pairs(records: list[dict], path: str | Path) -> int:
    """Write converged records as alternating unrelaxed/relaxed extxyz frames; returns the pair count."""
    from ase.io import write

    frames = []
    for rec in sorted(records, key=lambda r: r["index"]):
        if "error" in rec or not rec.get("converged"):
            continue
        u, r = _dict_atoms(rec["unrelaxed"]), _dict_atoms(rec["relaxed"])
        u.info.update(id=rec["id"], role="unrelaxed", prototype=rec["prototype"])
        r.info.update(id=rec["id"], role="relaxed", energy_per_atom=rec["energy_per_atom"], steps=rec["steps"])
        frames += [u, r]
    buf = io.StringIO()
    write(buf, frames, format="extxyz")
    path = Path(path)
    data = buf.getvalue().encode()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        if path.suffix == ".gz":
            with gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:  # mtime=0: reproducible bytes
                gz.write(data)
        else:
            fh.write(data)
    os.replace(tmp, path)
    return len(frames) // 2


def _pending(cfg: GenerateConfig, done: dict[int, dict]) -> list[int]:
    return [i for i in range(cfg.n) if i not in done]


def _iter_results(cfg: GenerateConfig, todo: list[int], workers: int) -> Iterator[dict]:
    if workers <= 1:
        _init_worker(cfg)
        for i in todo:
            yield _run_item(i)
        return
    import multiprocessing as mp

    os.environ["OMP_NUM_THREADS"] = "1"
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg, os.getpid())) as pool:
        yield from pool.imap_unordered(_run_item, todo)


def generate(cfg: GenerateConfig, out: str | Path, *, workers: int = 1, compress: bool = True,
             progress: bool = True) -> dict:
    """Run (or resume) a generation into folder ``out``; returns the summary written to ``generation.json``.

    Args:
        cfg: settings; rerunning with the same ``out`` must use the same seed/relaxer (checked).
        out: output folder (created).
        workers: worker processes, one thread each.
        compress: write ``pairs.extxyz.gz`` instead of ``pairs.extxyz``.
        progress: show a progress bar.
    """
    from e3relax.progress import progress as progress_bar

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_settings(cfg, out)
    _repair_journal(out / JOURNAL)
    done = read_journal(out)
    todo = _pending(cfg, done)
    logger.info("generate: %d items, %d already done in %s, %d to run on %d worker(s)",
                cfg.n, cfg.n - len(todo), out, len(todo), workers)
    t0 = time.perf_counter()
    with open(out / JOURNAL, "a", encoding="utf-8") as journal:
        for rec in progress_bar(_iter_results(cfg, todo, workers), total=len(todo), disable=not progress, desc="relax",
                                unit="structure"):
            journal.write(json.dumps(rec) + "\n")
            journal.flush()
            done[rec["index"]] = rec
            if "error" in rec:
                logger.warning("generate: item %s (%s) failed: %s", rec["index"], rec.get("id"), rec["error"])
    wall = time.perf_counter() - t0
    records = [done[i] for i in range(cfg.n) if i in done]
    pairs_path = out / ("pairs.extxyz.gz" if compress else "pairs.extxyz")
    n_pairs = write_pairs(records, pairs_path)
    summary = _summary(cfg, records, n_pairs, pairs_path, wall, workers)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    logger.info("generate: %d pairs written to %s (%d failed, %d not converged)",
                n_pairs, pairs_path, summary["failed"], summary["not_converged"])
    return summary


def _check_same_settings(cfg: GenerateConfig, out: Path) -> None:
    path = out / CONFIG
    new = asdict(cfg)
    if not path.exists():
        path.write_text(json.dumps(new, indent=2) + "\n", encoding="utf-8")
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    diff = [k for k in new if k != "n" and k in old and old[k] != new[k]]
    if diff:
        raise ValueError(f"{out}: results were generated with different settings ({', '.join(diff)}); "
                         "use another --out folder or the same settings to resume")


def _summary(cfg: GenerateConfig, records: list[dict], n_pairs: int, pairs_path: Path, wall: float, workers: int) -> dict:
    ok = [r for r in records if "error" not in r]
    secs = [r["seconds"] for r in ok]
    protos: dict[str, int] = {}
    for r in ok:
        if r.get("converged"):
            protos[r["prototype"]] = protos.get(r["prototype"], 0) + 1
    return {
        "config": asdict(cfg),
        "pairs": n_pairs,
        "file": pairs_path.name,
        "failed": len(records) - len(ok),
        "not_converged": sum(1 for r in ok if not r.get("converged")),
        "prototypes": dict(sorted(protos.items())),
        "relax_seconds_total": round(float(np.sum(secs)), 1) if secs else 0.0,
        "relax_seconds_mean": round(float(np.mean(secs)), 3) if secs else 0.0,
        "steps_mean": round(float(np.mean([r["steps"] for r in ok])), 1) if ok else 0.0,
        "last_run_wall_seconds": round(wall, 1),
        "last_run_workers": workers,
    }


def add_data_parser(subparsers: Any) -> None:
    """Register ``e3relax data generate`` (called by the ``data`` command)."""
    from e3relax.cli.generate import add_generate_arguments, run_generate

    p = subparsers.add_parser("generate", help="generate (unrelaxed, CHGNet-relaxed) pairs: the built-in dataset",
                              description="Build strained, rattled prototype crystals and relax them with CHGNet "
                                          "(FIRE + FrechetCellFilter), in parallel and resumably.")
    add_generate_arguments(p)
    p.set_defaults(func=run_generate)
