"""Files for ``e3relax predict``: finding inputs, reading them, naming and writing outputs, the summary.

Inputs are files, folders (searched recursively) or glob patterns. A file is read by its name:
``*.cif`` as CIF, ``*.xyz`` / ``*.extxyz`` as extended XYZ (every frame), anything else as a
POSCAR/CONTCAR (so ``POSCAR_123``, ``CONTCAR`` or ``my_structure`` all work), falling back to
ASE's format detection. In folders, hidden files and obvious non-structures (``.csv``, ``.md``,
``.json``, ...) are skipped.
"""
from __future__ import annotations

import csv
import glob
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

__all__ = ["FORMATS", "InputFile", "find_inputs", "read_structures", "output_names", "safe_stem", "write_structure",
           "SUMMARY_FIELDS", "write_summary"]

log = logging.getLogger(__name__)

#: output format -> (ASE format, file extension)
FORMATS = {"cif": ("cif", "cif"), "vasp": ("vasp", "vasp"), "extxyz": ("extxyz", "extxyz")}
_SKIP_SUFFIXES = {".csv", ".md", ".txt", ".json", ".yaml", ".yml", ".log", ".py", ".pt", ".gz", ".tar", ".tgz",
                  ".zip", ".lmdb", ".png", ".pdf", ".npz", ".npy", ".pkl"}
_XYZ = {".xyz", ".extxyz"}


@dataclass
class InputFile:
    """One input file and the output stem its structures are written under."""

    path: Path
    stem: str = ""
    structures: list[Any] = field(default_factory=list)


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def find_inputs(specs: Sequence[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files, folders and globs into input files (each once, in the order given).

    Returns:
        ``(files, problems)``; problems are ``(spec, reason)`` for specs that match nothing.
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            files.append(p)

    for spec in specs:
        spec = str(spec)
        path = Path(spec)
        if path.is_file():
            add(path)
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not any(
                part.startswith(".") for part in p.relative_to(path).parts) and p.suffix.lower() not in _SKIP_SUFFIXES)
            if not found:
                problems.append((spec, "folder holds no structure files"))
            for p in found:
                add(p)
        elif _has_magic(spec):
            found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
            if not found:
                problems.append((spec, "pattern matches no file"))
            for p in found:
                add(p)
        else:
            problems.append((spec, "no such file or folder"))
    return files, problems


def _floats(line: str, n: int) -> bool:
    try:
        [float(x) for x in line.split()[:n]]
    except ValueError:
        return False
    return len(line.split()) >= n


def _cif_reason(text: str, exc: Exception | None) -> str | None:
    """A plain reason why ``text`` is not a readable CIF (None: no better words than ASE's)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not any(ln.lower().startswith("data_") for ln in lines):
        return "not a CIF (no 'data_' block)"
    sites = any(ln.lower().startswith(("_atom_site_fract_", "_atom_site_cartn_")) for ln in lines)
    message = str(exc) if exc is not None else ""
    if "incomplete row" in message:
        return "truncated CIF (the last row of a loop is incomplete)"
    if not sites:
        return "truncated CIF, or one without atoms (no '_atom_site' loop)"
    if exc is None or isinstance(exc, IndexError) or "Unexpected CIF file entry" in message \
            or "at least one array" in message:
        return "truncated CIF (its '_atom_site' loop has no complete row)"
    return None


def _poscar_reason(text: str) -> str | None:
    """A plain reason why ``text`` is not a readable POSCAR/CONTCAR (None: no better words than ASE's)."""
    lines = text.splitlines()
    if len(lines) < 2 or not _floats(lines[1], 1):
        got = lines[1].strip()[:40] if len(lines) > 1 else "nothing"
        return f"not a POSCAR/CONTCAR (line 2 must be the scaling factor, got '{got}')"
    for k in (2, 3, 4):
        if len(lines) <= k:
            return f"truncated POSCAR/CONTCAR ({len(lines)} lines; it ends before the three lattice vectors)"
        if not _floats(lines[k], 3):
            return f"not a POSCAR/CONTCAR (line {k + 1} must be a lattice vector, got '{lines[k].strip()[:40]}')"
    k = 5
    if len(lines) > k and lines[k].split() and not lines[k].split()[0].isdigit():
        k += 1  # species line (VASP 5)
    if len(lines) <= k:
        return f"truncated POSCAR/CONTCAR ({len(lines)} lines; it ends before the atom counts line)"
    try:
        counts = [int(x) for x in lines[k].split()]
    except ValueError:
        return f"not a POSCAR/CONTCAR (line {k + 1} must be the atom counts, got '{lines[k].strip()[:40]}')"
    mode = k + 1
    if len(lines) > mode and lines[mode].strip()[:1].lower() == "s":  # selective dynamics
        mode += 1
    coords = 0
    for ln in lines[mode + 1:]:
        if not _floats(ln, 3):
            break
        coords += 1
    if coords < sum(counts):
        return (f"the counts line (line {k + 1}: '{lines[k].strip()}', {sum(counts)} atoms) does not match the "
                f"coordinates ({coords} coordinate line{'s' * (coords != 1)} follow)")
    return None


def _reason(path: Path, fmt: str | None, exc: Exception | None) -> str | None:
    """Plain words for why ``path`` could not be read as ``fmt`` (ASE's messages are often empty or cryptic)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not text.strip():
        return "empty file"
    if fmt == "cif":
        return _cif_reason(text, exc)
    if fmt == "vasp":
        return _poscar_reason(text)
    return None


def read_structures(path: str | Path) -> list[Any]:
    """Every structure of a CIF, POSCAR/CONTCAR (any name) or extxyz file, as ``ase.Atoms``.

    Raises:
        ValueError: naming the file and why it cannot be read (in plain words where we recognise
            the problem: not a CIF, a truncated file, a counts line that does not match the
            coordinates).
    """
    from ase.io import read

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".cif":
        tries = ["cif"]
    elif suffix in _XYZ:
        tries = ["extxyz"]
    else:
        tries = ["vasp", None]  # POSCAR/CONTCAR with any name, then ASE's own detection
    errors, reasons = [], []
    for fmt in tries:
        try:
            frames = read(str(path), index=":", format=fmt) if fmt != "vasp" else [read(str(path), format="vasp")]
        except Exception as exc:  # noqa: BLE001 - ASE raises many types for malformed files
            reasons.append(_reason(path, fmt, exc))
            detail = f"{type(exc).__name__}: {exc}" if str(exc).strip() else type(exc).__name__
            errors.append(f"{fmt or 'auto'}: {detail}")
            continue
        frames = list(frames) if isinstance(frames, list) else [frames]
        if not frames:
            reasons.append(_reason(path, fmt, None))
            errors.append(f"{fmt or 'auto'}: no structure in the file")
            continue
        if any(len(a) == 0 for a in frames):
            raise ValueError(f"{path}: a structure has no atoms")
        return frames
    reason = next((r for r in reasons if r), None)
    if reason is not None:
        raise ValueError(f"{path}: not a readable structure file: {reason}")
    raise ValueError(f"{path}: not a readable structure file ({'; '.join(errors)})")


#: words for which ASE (case-sensitive) or pymatgen (case-insensitive) take a file for a VASP file
#: whatever its extension (``POSCAR_NaCl.cif`` is read as a POSCAR)
_VASP_WORDS = re.compile(r"POSCAR|CONTCAR|CENTCAR|CHGCAR|LOCPOT|OUTCAR|XDATCAR|vasprun", re.IGNORECASE)
#: extension-like parts of a stem that pymatgen would take for the format (``a.cif_1.vasp`` is a CIF to it)
_EXT_WORDS = re.compile(r"\.(cif|mcif|vasp|xyz|extxyz|json|cssr|xsf)", re.IGNORECASE)


def safe_stem(stem: str, fmt: str | None) -> str:
    """``stem`` changed so that ASE's and pymatgen's guess from ``<stem>.<ext of fmt>`` is ``fmt``.

    For CIF and extxyz outputs the VASP words become ``relaxed`` (``POSCAR_NaCl`` ->
    ``relaxed_NaCl``); a dot before an extension-like word becomes ``_`` for every format.
    """
    if fmt is None:
        return stem
    if fmt != "vasp":
        stem = _VASP_WORDS.sub("relaxed", stem)
    return _EXT_WORDS.sub(lambda m: "_" + m.group(1), stem)


def output_names(files: Sequence[Path], fmt: str | None = None) -> dict[Path, str]:
    """A unique output stem per input file: its stem (see :func:`safe_stem` for the output format
    ``fmt``), prefixed by parent folders when two collide."""
    def stem(p: Path, depth: int) -> str:
        base = p.stem if p.suffix.lower() in {".cif", ".vasp", ".poscar", ".xyz", ".extxyz"} else p.name
        parents = [q.name for q in list(p.parents)[:depth] if q.name][::-1]
        return safe_stem("_".join(parents + [base]), fmt)

    names = {p: stem(p, 0) for p in files}
    for depth in range(1, 8):
        counts: dict[str, int] = {}
        for n in names.values():
            counts[n] = counts.get(n, 0) + 1
        clash = [p for p, n in names.items() if counts[n] > 1]
        if not clash:
            return names
        for p in clash:
            names[p] = stem(p, depth)
    used: dict[str, int] = {}
    for p in files:  # still ambiguous (e.g. same path spelled twice): number them
        n = names[p]
        used[n] = used.get(n, 0) + 1
        if used[n] > 1:
            names[p] = f"{n}-{used[n]}"
    return names


def write_structure(atoms: Any, out_dir: Path, name: str, fmt: str, info: dict[str, Any] | None = None) -> Path:
    """Write one structure as ``out_dir/<name>.<ext>`` (same atom order; VASP files unsorted)."""
    from ase.io import write

    ase_fmt, ext = FORMATS[fmt]
    dst = out_dir / f"{name}.{ext}"
    atoms = atoms.copy()
    if fmt == "extxyz" and info:
        atoms.info.update({f"e3relax_{k}": v for k, v in info.items() if v is not None})
    kwargs = {"direct": True, "sort": False} if fmt == "vasp" else {}
    write(str(dst), atoms, format=ase_fmt, **kwargs)
    return dst


#: summary CSV columns
SUMMARY_FIELDS = ["id", "input", "index", "output", "atoms", "volume_change", "max_displacement", "min_distance",
                  "uncertainty", "unseen_elements", "unphysical", "flags", "vacuum_directions", "refine_steps", "refine_converged", "error"]


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return ";".join(str(x) for x in v)
    return v


def write_summary(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write the per-structure summary CSV (columns :data:`SUMMARY_FIELDS`)."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in SUMMARY_FIELDS})
    return path


def iter_items(files: Sequence[Path], names: dict[Path, str], failures: list[dict[str, Any]]
               ) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """``(id, atoms, row)`` for every structure of every readable file; unreadable files go to ``failures``."""
    for path in files:
        try:
            frames = read_structures(path)
        except ValueError as exc:
            log.error("skipping %s", exc)
            failures.append({"id": str(path), "input": str(path), "error": str(exc)})
            continue
        multi = len(frames) > 1
        for i, atoms in enumerate(frames):
            sid = f"{path}@{i}" if multi else str(path)
            name = f"{names[path]}_{i}" if multi else names[path]
            yield sid, atoms, {"id": sid, "input": str(path), "index": i if multi else "", "name": name}
