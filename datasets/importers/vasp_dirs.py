"""Importer ``vasp_dirs``: one folder per VASP relaxation, unrelaxed POSCAR -> final CONTCAR.

Layout (the Sr-Nb-H hydrides of Gibson et al. 2022, and most users' own runs)::

    SRC/                       (or SRC/raw_dft/)
      <id>/
        MP_inputs/OG_POSCAR    unrelaxed (generated) structure
        MP_inputs/POSCAR       input of a first stage, if any
        MP_inputs/CONTCAR, MP_inputs/XDATCAR   first stage and its frames
        CONTCAR                final relaxed structure
        XDATCAR                frames of the last stage

The unrelaxed structure is the first file found among ``unrelaxed_names`` (default
``OG_POSCAR``, ``MP_inputs/OG_POSCAR``, ``MP_inputs/POSCAR``, ``POSCAR``); the relaxed one the
first among ``relaxed_names`` (default ``CONTCAR``). With ``trajectory=True`` the frames of every
XDATCAR in ``xdatcar_names`` (default: the last stage's ``XDATCAR``; add ``MP_inputs/XDATCAR``
first for both stages where the first stage used the same cell setting) become trajectory targets,
optionally sub-sampled to ``num_frames`` evenly spaced frames (first and last kept); frames of a
stage run from a species-sorted POSCAR are put back into the unrelaxed atom order. A folder
missing either side is reported as ``missing_partner``; a file ASE cannot parse as ``unreadable``.

With ``frames_as_pairs=True`` every frame of the XDATCARs in ``frame_names`` (default both stages)
becomes an extra training pair ``(frame -> CONTCAR)``: frames are put into the atom order of the
CONTCAR (which is the unrelaxed order), frames equal to the CONTCAR, to OG_POSCAR or to the frame
before are dropped, and ``max_frames`` keeps that many evenly spaced ones per folder. A folder whose frames
cannot be read or matched keeps its original pair and says why in the report's warnings.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from e3relax.datasets.importers.base import Importer, Item, RawPair, Skipped
from e3relax.datasets.importers.poscar_pairs import parse_poscar
from e3relax.registry import IMPORTERS

UNRELAXED_NAMES = ("OG_POSCAR", "MP_inputs/OG_POSCAR", "MP_inputs/POSCAR", "POSCAR")
RELAXED_NAMES = ("CONTCAR",)
XDATCAR_NAMES = ("XDATCAR",)
FRAME_NAMES = ("MP_inputs/XDATCAR", "XDATCAR")
#: frames closer than this (A, positions and cell) to the relaxed structure or the frame before are dropped
SAME_FRAME_TOL = 1e-4
_RUN_FILES = {"POSCAR", "OG_POSCAR", "CONTCAR", "XDATCAR", "MP_inputs"}


def _natural_key(name: str) -> tuple:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t)


def _is_run(folder: Path) -> bool:
    return folder.is_dir() and any((folder / n).exists() for n in _RUN_FILES)


def even_frames(num_total: int, num_frames: int | None) -> list[int]:
    """Indices of exactly ``num_frames`` evenly spaced frames out of ``num_total`` (first and last
    included; frames repeat when there are fewer), so every record has the same trajectory length."""
    if num_frames is None:
        return list(range(num_total))
    if num_frames == 1:
        return [num_total - 1]
    return np.round(np.linspace(0, num_total - 1, num_frames)).astype(int).tolist()


def read_xdatcar(path: Path) -> list:
    """All frames of an XDATCAR (fixed or variable cell) as ``ase.Atoms``; ``ValueError`` if unreadable."""
    from ase.io import read

    try:
        frames = read(str(path), index=":", format="vasp-xdatcar")
    except Exception as exc:
        raise ValueError(f"{path}: not a readable XDATCAR ({type(exc).__name__}: {exc})") from exc
    if not frames:
        raise ValueError(f"{path}: XDATCAR has no frames")
    return frames


def match_order(reference, frames: list, source: str, max_shift: float = 1.0) -> list:
    """Frames re-ordered to the atom order of ``reference``.

    A stage run from a species-sorted POSCAR (as pymatgen writes them) lists atoms grouped by
    species: each atom of frame 0 is matched to the reference atom of the same species at the
    nearest periodic image (optimal assignment per species), and every frame is permuted alike.

    Raises:
        ValueError: species counts differ, or a matched atom lies over ``max_shift`` A away.
    """
    from scipy.optimize import linear_sum_assignment

    first = frames[0]
    if np.array_equal(first.numbers, reference.numbers):
        return frames
    if sorted(first.numbers) != sorted(reference.numbers):
        raise ValueError(f"{source}: frames hold {first.get_chemical_formula()}, the unrelaxed structure "
                         f"{reference.get_chemical_formula()}")
    fa, fb = reference.get_scaled_positions(), first.get_scaled_positions()
    perm = np.empty(len(reference), dtype=int)
    for z in np.unique(reference.numbers):
        ia, ib = np.flatnonzero(reference.numbers == z), np.flatnonzero(first.numbers == z)
        d = fb[ib][None, :, :] - fa[ia][:, None, :]
        cost = np.linalg.norm((d - np.round(d)) @ reference.cell.array, axis=-1)
        rows, cols = linear_sum_assignment(cost)
        if cost[rows, cols].max() > max_shift:
            raise ValueError(f"{source}: cannot match the atom order of the frames to the unrelaxed structure "
                             f"(an atom would move {cost[rows, cols].max():.2f} A)")
        perm[ia[rows]] = ib[cols]
    return [f[perm] for f in frames]


def distinct_frames(frames: list, ends: Sequence, tol: float = SAME_FRAME_TOL) -> list:
    """``frames`` without those equal (within ``tol`` A in cell and positions, any periodic image)
    to one of ``ends`` (the pair's own unrelaxed and relaxed structures) or to the frame kept before."""
    def same(a, b) -> bool:
        if np.abs(a.cell.array - b.cell.array).max() > tol:
            return False
        d = a.get_scaled_positions() - b.get_scaled_positions()
        return bool(np.abs((d - np.round(d)) @ b.cell.array).max() <= tol)

    kept = []
    for f in frames:
        if not any(same(f, e) for e in ends) and not (kept and same(f, kept[-1])):
            kept.append(f)
    return kept


def unique_even(frames: list, max_frames: int | None) -> list:
    """At most ``max_frames`` evenly spaced frames (first and last kept), none repeated."""
    if max_frames is None or len(frames) <= max_frames:
        return list(frames)
    return [frames[i] for i in sorted(set(even_frames(len(frames), max_frames)))]


@IMPORTERS.register("vasp_dirs")
class VaspDirsImporter(Importer):
    """Pairs from VASP run folders (see the module docstring for the layout).

    Args:
        src: folder of run folders (a ``raw_dft`` sub-folder is used when src has no runs), or
            one run folder.
        trajectory: also read XDATCAR frames as trajectory targets; a run without them is skipped.
        num_frames: keep this many evenly spaced frames (None: all; needs ``trajectory``).
        frames_as_pairs: every XDATCAR frame of ``frame_names`` becomes an extra training pair.
        max_frames: at most this many frames per folder as pairs (None: all).
        unrelaxed_names / relaxed_names / xdatcar_names / frame_names: relative file names.
    """

    def __init__(self, src: str | Path, *, trajectory: bool = False, num_frames: int | None = None,
                 unrelaxed_names: Sequence[str] = UNRELAXED_NAMES, relaxed_names: Sequence[str] = RELAXED_NAMES,
                 xdatcar_names: Sequence[str] = XDATCAR_NAMES, frames_as_pairs: bool = False,
                 max_frames: int | None = None, frame_names: Sequence[str] = FRAME_NAMES,
                 trust_pickle: bool = False) -> None:
        super().__init__(src, trust_pickle=trust_pickle)
        self.trajectory = bool(trajectory)
        self.frames_as_pairs = bool(frames_as_pairs)
        if self.frames_as_pairs and self.trajectory:
            raise ValueError("vasp_dirs: frames_as_pairs and trajectory exclude each other (a frame pair has no "
                             "trajectory target); convert twice for both")
        self.max_frames = None if max_frames is None else int(max_frames)
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"vasp_dirs: max_frames must be >= 1, got {max_frames}")
        self.frame_names = tuple(frame_names)
        self.num_frames = None if num_frames is None else int(num_frames)
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"vasp_dirs: num_frames must be >= 1, got {num_frames}")
        self.unrelaxed_names = tuple(unrelaxed_names)
        self.relaxed_names = tuple(relaxed_names)
        self.xdatcar_names = tuple(xdatcar_names)

    def run_folders(self) -> list[Path]:
        """Run folders in natural order of their names."""
        root = self.src
        if _is_run(root) and not any(_is_run(p) for p in root.iterdir() if p.name != "MP_inputs"):
            return [root]
        runs = [p for p in root.iterdir() if _is_run(p)]
        if not runs and (root / "raw_dft").is_dir():
            runs = [p for p in (root / "raw_dft").iterdir() if _is_run(p)]
        if not runs:
            raise ValueError(f"vasp_dirs: no run folders (with POSCAR/OG_POSCAR/CONTCAR/MP_inputs) in '{root}'")
        return sorted(runs, key=lambda p: _natural_key(p.name))

    def tasks(self) -> Iterator[str]:
        return iter([str(p) for p in self.run_folders()])

    def __len__(self) -> int:
        return len(self.run_folders())

    @staticmethod
    def _first(folder: Path, names: Sequence[str]) -> Path | None:
        for n in names:
            if (folder / n).is_file():
                return folder / n
        return None

    def load(self, task: str) -> Item:
        folder = Path(task)
        sid = folder.name
        u_path = self._first(folder, self.unrelaxed_names)
        r_path = self._first(folder, self.relaxed_names)
        if u_path is None or r_path is None:
            lacks = "unrelaxed (" + ", ".join(self.unrelaxed_names) + ")" if u_path is None else \
                "relaxed (" + ", ".join(self.relaxed_names) + ")"
            return Skipped(sid, f"{folder}: no {lacks} file", "missing_partner", str(folder))
        try:
            unrelaxed = parse_poscar(u_path.read_text(encoding="utf-8", errors="strict"), str(u_path))
            relaxed = parse_poscar(r_path.read_text(encoding="utf-8", errors="strict"), str(r_path))
        except (ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
            return Skipped(sid, str(exc), "unreadable", str(folder))
        trajectory = None
        if self.trajectory:
            paths = [folder / n for n in self.xdatcar_names if (folder / n).is_file()]
            if not paths:
                return Skipped(sid, f"{folder}: trajectory requested but no XDATCAR ({', '.join(self.xdatcar_names)})",
                               "missing_partner", str(folder))
            try:
                stages = [read_xdatcar(p) for p in paths]
            except ValueError as exc:
                return Skipped(sid, str(exc), "unreadable", str(folder))
            for p, stage in zip(paths, stages):
                if len(stage[0]) != len(unrelaxed):
                    return Skipped(sid, f"{p}: {len(stage[0])} atoms, the unrelaxed structure {len(unrelaxed)}",
                                   "atom_count", str(folder))
            try:
                frames = [f for p, stage in zip(paths, stages) for f in match_order(unrelaxed, stage, str(p))]
            except ValueError as exc:
                return Skipped(sid, str(exc), "species", str(folder))
            trajectory = [frames[i] for i in even_frames(len(frames), self.num_frames)]
        pair = RawPair(id=sid, unrelaxed=unrelaxed, relaxed=relaxed, trajectory=trajectory, source=str(folder))
        if self.frames_as_pairs:
            self._add_frames(pair, folder)
        return pair

    def _add_frames(self, pair: RawPair, folder: Path) -> None:
        """Set ``pair.frames`` from the XDATCARs of ``frame_names`` (a problem becomes a warning)."""
        frames = []
        for p in (folder / n for n in self.frame_names):
            if not p.is_file():
                continue
            try:
                stage = read_xdatcar(p)
                if len(stage[0]) != len(pair.relaxed):
                    raise ValueError(f"{p}: {len(stage[0])} atoms, the relaxed structure {len(pair.relaxed)}")
                frames += match_order(pair.relaxed, stage, str(p))
            except ValueError as exc:
                pair.warnings.append(f"frames not used: {exc}")
        pair.frames = unique_even(distinct_frames(frames, (pair.unrelaxed, pair.relaxed)), self.max_frames)
