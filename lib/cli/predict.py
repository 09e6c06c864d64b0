"""``e3relax predict`` (relax your own structures) and ``e3relax pretrained`` (what ships).

Examples::

    e3relax predict my_cifs/ POSCAR_* data.extxyz --checkpoint pnictides --out relaxed/
    e3relax predict structures/ --checkpoint runs/mine/checkpoints/best.pt --out out --format vasp
    e3relax predict slab.cif --checkpoint srnbh --out out --refine chgnet --fmax 0.05
    e3relax predict POSCAR --checkpoint pnictides --out out --no-symmetry --no-canonical-cell

Each prediction is made in the input's reduced primitive cell and projected onto the input's
space-group operations (spglib, --symprec, default 0.01 A), then written in the input's own cell,
atom order and origin; --no-symmetry and --no-canonical-cell turn these off.
    e3relax pretrained

Each relaxed structure is written as ``OUT/<input stem>.<format>`` (``<stem>_<i>`` for the i-th
structure of a multi-structure file), same atom order as the input, and ``OUT/summary.csv`` gives
per structure: id, atoms, predicted volume change, largest displacement, shortest distance,
ensemble uncertainty, flags. A bad file is reported and skipped; the exit status is 1 if any
input failed, 2 if the checkpoint cannot be loaded (one line on stderr), 0 otherwise.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run_predict", "run_pretrained"]

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("predict", help="relax structure files with a trained or pretrained model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders or glob patterns (CIF, POSCAR/CONTCAR, extxyz)")
    p.add_argument("--checkpoint", required=True, action="append",
                   help="checkpoint file, run folder or pretrained name (e3relax pretrained); repeat for an ensemble")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", default="cif", choices=["cif", "vasp", "extxyz"], help="output format; default cif")
    p.add_argument("--batch-size", type=int, default=16, help="structures per forward pass; default 16")
    p.add_argument("--device", default="cpu", help="cpu | auto | cuda | cuda:N; default cpu")
    p.add_argument("--no-ensemble", action="store_true", help="use only the first member of an ensemble (no uncertainty)")
    p.add_argument("--deform-vacuum", action="store_true",
                   help="also apply the predicted strain along vacuum / non-periodic directions")
    p.add_argument("--vacuum-threshold", type=float, default=7.0,
                   help="an empty gap wider than this (A) is vacuum; negative: only pbc False counts")
    add_frame_arguments(p)
    p.add_argument("--refine", choices=["chgnet"], default=None, help="polish each prediction with CHGNet + FIRE")
    p.add_argument("--fmax", type=float, default=0.05, help="refinement force threshold (eV/A); default 0.05")
    p.add_argument("--max-steps", type=int, default=500, help="refinement FIRE step cap; default 500")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_predict)
    q = subparsers.add_parser("pretrained", help="list the pretrained checkpoints that ship with e3relax")
    q.set_defaults(func=run_pretrained)
    return p


def add_frame_arguments(p: argparse.ArgumentParser) -> None:
    """``--no-symmetry``, ``--no-canonical-cell`` and ``--symprec`` (shared by predict and evaluate)."""
    p.add_argument("--no-symmetry", action="store_true",
                   help="do not project the prediction onto the input's space-group operations")
    cell = p.add_mutually_exclusive_group()
    cell.add_argument("--no-canonical-cell", dest="canonical_cell", action="store_false", default=None,
                      help="predict in the input's own cell, not in its reduced primitive cell")
    cell.add_argument("--canonical-cell", dest="canonical_cell", action="store_true", default=None,
                      help="predict in the reduced primitive cell even when the checkpoint was trained in its "
                           "datasets' own cells (default: the frame the checkpoint was trained in)")
    p.add_argument("--symprec", type=float, default=0.01,
                   help="spglib tolerance (A) for the operations and the primitive cell; default 0.01")


def frame_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~e3relax.predict.Relaxer` keywords of :func:`add_frame_arguments`."""
    from e3relax.predict.symmetry import check_symprec

    return {"symmetry": not args.no_symmetry, "canonical": args.canonical_cell,
            "symprec": check_symprec(args.symprec, "--symprec")}


def run_pretrained(args: argparse.Namespace) -> int:
    from e3relax.predict.pretrained import PRETRAINED_DIR, pretrained_index

    index = pretrained_index()
    if not index:
        print("no pretrained checkpoints ship with this installation")
        return 0
    for name, entry in sorted(index.items()):
        size = sum((PRETRAINED_DIR / m).stat().st_size for m in entry["members"] if (PRETRAINED_DIR / m).exists())
        print(f"{name}: {entry.get('description', '')}")
        print(f"    members: {len(entry['members'])} ({size / 1e6:.1f} MB), model card: "
              f"{PRETRAINED_DIR / entry.get('card', name + '.md')}")
        for k, v in (entry.get("metrics") or {}).items():
            print(f"    {k}: {v}")
    return 0


def _refine(result: dict[str, Any], fmax: float, max_steps: int) -> None:
    from e3relax.chgnet_tools import chgnet_relax
    from e3relax.structures import as_atoms

    atoms = as_atoms(result["final_structure"])
    r = chgnet_relax(atoms, fmax=fmax, max_steps=max_steps)
    result["final_structure"] = r.atoms
    result["refine_steps"], result["refine_converged"] = r.steps, r.converged


def _progress(total: int, disable: bool, desc: str):
    from e3relax.progress import progress

    return progress(total=total, unit="files", disable=disable, desc=desc)


def run_predict(args: argparse.Namespace) -> int:
    from e3relax.predict import Relaxer
    from e3relax.predict.io import find_inputs, iter_items, output_names, write_structure, write_summary

    frames = frame_options(args)  # a bad --symprec fails before any file is read
    files, problems = find_inputs(args.inputs)
    failures: list[dict[str, Any]] = []
    for spec, reason in problems:
        log.error("input %s: %s", spec, reason)
        failures.append({"id": spec, "input": spec, "error": reason})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        relaxer = Relaxer.from_checkpoint(args.checkpoint, device=args.device, ensemble=not args.no_ensemble, **frames)
    except (FileNotFoundError, ValueError) as exc:  # a wrong name or path, a refused file: one line, status 2
        from e3relax.errors import InputError

        raise InputError(str(exc)) from exc
    names = output_names(files, args.format)
    rows: list[dict[str, Any]] = []
    meta: dict[str, dict[str, Any]] = {}

    def items():
        for sid, atoms, row in iter_items(files, names, failures):
            meta[sid] = row
            yield sid, atoms

    thr = args.vacuum_threshold if args.vacuum_threshold >= 0 else None
    bar = _progress(len(files), args.no_progress, "predict + refine (CHGNet + FIRE)" if args.refine else "predict")
    done_files: set[str] = set()
    for res in relaxer.iter_relax(items(), batch_size=args.batch_size, deform_vacuum=args.deform_vacuum,
                                  vacuum_threshold=thr):
        row = meta.pop(res["id"])
        row.update({k: v for k, v in res.items() if k not in ("final_structure", "trajectory")})
        row["atoms"] = res.get("num_atoms")
        if "error" not in res:
            try:
                if args.refine == "chgnet":
                    _refine(res, args.fmax, args.max_steps)
                    row["refine_steps"], row["refine_converged"] = res["refine_steps"], res["refine_converged"]
                info = {k: row.get(k) for k in ("uncertainty", "volume_change", "refine_steps")}
                row["output"] = str(write_structure(res["final_structure"], out, row["name"], args.format, info))
            except Exception as exc:  # noqa: BLE001 - one bad structure must not stop the rest
                row["error"] = f"{type(exc).__name__}: {exc}"
        if "error" in row and row["error"]:
            log.error("structure %s: %s", row["id"], row["error"])
            failures.append(row)
        else:
            rows.append(row)
        if row["input"] not in done_files:
            done_files.add(row["input"])
            bar.update(1)
    bar.update(len(files) - bar.n)
    bar.close()
    summary = write_summary(rows + failures, out / "summary.csv")
    flagged = sum(bool(r.get("unphysical")) for r in rows)
    log.info("%d structures relaxed (%d flagged), %d failed; summary: %s", len(rows), flagged, len(failures), summary)
    return 1 if failures else 0
