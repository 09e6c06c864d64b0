"""``extxyz`` (and ``builtin``): structure pairs or relaxation trajectories in extended XYZ.

Accepted forms (``.extxyz``/``.xyz``, optionally ``.gz``):

1. **One pair file** (``src`` is a file, default): frames with ``info['role']`` equal to
   ``unrelaxed`` / ``relaxed`` are paired by ``info['id']``; without roles, frames alternate
   unrelaxed, relaxed, unrelaxed, ...
2. **Two files** (``src`` is a folder holding ``unrelaxed.extxyz`` and ``relaxed.extxyz``, or
   ``.xyz``/``.gz``): frame k of one pairs with frame k of the other, or by ``info['id']`` when
   every frame has one.
3. **Trajectories** (``src`` is a folder of other extxyz files, or ``mode="trajectory"``): each
   file is one relaxation; first frame = unrelaxed, last frame = relaxed, all frames = trajectory.

Ids: ``info['id']``, else ``<file stem>:<index>`` (pairs) or the file stem (trajectories). Split:
``info['split']`` when present. Energy: ``info['energy_per_atom']``, else the relaxed frame's
total energy (``info['energy']`` or its calculator) divided by the atom count.
"""
from __future__ import annotations

import gzip
import io
import logging
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from e3relax.datasets.importers.base import Importer, Item, RawPair, Skipped
from e3relax.registry import IMPORTERS

__all__ = ["ExtxyzImporter", "BuiltinImporter", "read_frames"]

logger = logging.getLogger(__name__)

SUFFIXES = (".extxyz", ".xyz", ".extxyz.gz", ".xyz.gz")
MODES = ("auto", "pairs", "two_files", "trajectory")


def _is_xyz(path: Path) -> bool:
    return path.is_file() and any(path.name.endswith(s) for s in SUFFIXES)


def read_frames(path: Path) -> list:
    """All frames of an extxyz file (gzip-compressed when the name ends in ``.gz``).

    Raises:
        ValueError: naming the file when it cannot be parsed.
    """
    from ase.io import read

    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                frames = read(io.StringIO(fh.read()), index=":", format="extxyz")
        else:
            frames = read(str(path), index=":", format="extxyz")
    except Exception as exc:
        raise ValueError(f"{path}: cannot read extxyz ({type(exc).__name__}: {exc})") from exc
    return list(frames)


def _energy(atoms: Any) -> float | None:
    value = atoms.info.get("energy_per_atom")
    if value is None:
        total = atoms.info.get("energy")
        if total is None and atoms.calc is not None:
            total = atoms.calc.results.get("energy")
        value = None if total is None else float(total) / len(atoms)
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _plain(atoms: Any) -> Any:
    """A copy without calculator (the converter needs only numbers, positions, cell, pbc)."""
    from ase import Atoms

    out = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=atoms.pbc)
    if atoms.has("tags"):
        out.set_tags(atoms.get_tags())
    return out


def _pair(item_id: str, u: Any, r: Any, source: str, traj: list | None = None) -> RawPair:
    split = u.info.get("split", r.info.get("split"))
    return RawPair(item_id, _plain(u), _plain(r), energy=_energy(r),
                   trajectory=[_plain(f) for f in traj] if traj else None,
                   split=str(split) if split is not None else None, source=source)


@IMPORTERS.register("extxyz")
class ExtxyzImporter(Importer):
    """Pairs or trajectories from extended XYZ files (see the module docstring for the forms).

    Args:
        src: a file (pairs or, with ``mode="trajectory"``, one trajectory) or a folder.
        trust_pickle: unused.
        mode: ``auto``, ``pairs``, ``two_files`` or ``trajectory``.
    """

    def __init__(self, src: str | Path, *, trust_pickle: bool = False, mode: str = "auto") -> None:
        super().__init__(src, trust_pickle=trust_pickle)
        if mode not in MODES:
            raise ValueError(f"extxyz: unknown mode '{mode}'; choose one of {', '.join(MODES)}")
        self.mode = self._resolve_mode(mode)

    def _two_files(self) -> tuple[Path, Path] | None:
        for suffix in SUFFIXES:
            u, r = self.src / f"unrelaxed{suffix}", self.src / f"relaxed{suffix}"
            if u.is_file() and r.is_file():
                return u, r
        return None

    def _resolve_mode(self, mode: str) -> str:
        if mode != "auto":
            return mode
        if self.src.is_file():
            return "pairs"
        return "two_files" if self._two_files() else "trajectory"

    def __iter__(self) -> Iterator[Item]:
        if self.mode == "pairs":
            yield from self._pairs_file(self.src)
        elif self.mode == "two_files":
            yield from self._two_file_pairs()
        else:
            files = [self.src] if self.src.is_file() else sorted(p for p in self.src.iterdir() if _is_xyz(p))
            for path in files:
                yield self._trajectory(path)

    def _pairs_file(self, path: Path) -> Iterator[Item]:
        try:
            frames = read_frames(path)
        except ValueError as exc:
            yield Skipped(path.name, str(exc), "unreadable", str(path))
            return
        stem = path.name.split(".")[0]
        if frames and all("role" in f.info for f in frames):
            yield from self._pair_by_role(frames, path)
            return
        for k in range(0, len(frames) - 1, 2):
            u, r = frames[k], frames[k + 1]
            item_id = str(u.info.get("id", f"{stem}:{k // 2}"))
            if "id" in r.info and str(r.info["id"]) != item_id:
                yield Skipped(item_id, f"{path}: frames {k} and {k + 1} have different ids "
                              f"('{item_id}' vs '{r.info['id']}')", "missing_partner", str(path))
                continue
            yield _pair(item_id, u, r, str(path))
        if len(frames) % 2:
            last = frames[-1]
            item_id = str(last.info.get("id", f"{stem}:{len(frames) // 2}"))
            yield Skipped(item_id, f"{path}: odd number of frames, last frame has no relaxed partner",
                          "missing_partner", str(path))

    def _pair_by_role(self, frames: list, path: Path) -> Iterator[Item]:
        sides: dict[str, dict[str, Any]] = {}
        for k, f in enumerate(frames):
            item_id = str(f.info.get("id", f"{path.name.split('.')[0]}:{k}"))
            sides.setdefault(item_id, {})[str(f.info["role"])] = f
        for item_id, side in sides.items():
            if "unrelaxed" in side and "relaxed" in side:
                yield _pair(item_id, side["unrelaxed"], side["relaxed"], str(path))
            else:
                missing = "relaxed" if "unrelaxed" in side else "unrelaxed"
                yield Skipped(item_id, f"{path}: no {missing} frame for id '{item_id}'", "missing_partner", str(path))

    def _two_file_pairs(self) -> Iterator[Item]:
        paths = self._two_files()
        if paths is None:
            raise FileNotFoundError(f"extxyz: no unrelaxed.extxyz + relaxed.extxyz pair in '{self.src}'")
        try:
            fu, fr = read_frames(paths[0]), read_frames(paths[1])
        except ValueError as exc:
            yield Skipped(self.src.name, str(exc), "unreadable", str(self.src))
            return
        if all("id" in f.info for f in fu + fr):
            by_id = {str(f.info["id"]): f for f in fr}
            used = set()
            for f in fu:
                item_id = str(f.info["id"])
                if item_id in by_id:
                    used.add(item_id)
                    yield _pair(item_id, f, by_id[item_id], str(self.src))
                else:
                    yield Skipped(item_id, f"{paths[1]}: no frame with id '{item_id}'", "missing_partner", str(paths[1]))
            for item_id in by_id.keys() - used:
                yield Skipped(item_id, f"{paths[0]}: no frame with id '{item_id}'", "missing_partner", str(paths[0]))
            return
        for k in range(max(len(fu), len(fr))):
            item_id = str(fu[k].info.get("id", f"{k}")) if k < len(fu) else str(k)
            if k >= len(fu) or k >= len(fr):
                short = paths[0] if k >= len(fu) else paths[1]
                yield Skipped(item_id, f"{short}: has no frame {k} (files differ in length)", "missing_partner", str(short))
                continue
            yield _pair(item_id, fu[k], fr[k], str(self.src))

    def _trajectory(self, path: Path) -> Item:
        stem = path.name.split(".")[0]
        try:
            frames = read_frames(path)
        except ValueError as exc:
            return Skipped(stem, str(exc), "unreadable", str(path))
        item_id = str(frames[0].info.get("id", stem)) if frames else stem
        if len(frames) < 2:
            return Skipped(item_id, f"{path}: a trajectory needs at least 2 frames, found {len(frames)}",
                           "missing_partner", str(path))
        if len({len(f) for f in frames}) != 1:
            return Skipped(item_id, f"{path}: frames have different atom counts", "atom_count", str(path))
        return _pair(item_id, frames[0], frames[-1], str(path), traj=frames)


@IMPORTERS.register("builtin")
class BuiltinImporter(ExtxyzImporter):
    """The dataset shipped with the package (CHGNet-relaxed, not DFT), with a seeded 8:1:1 split.

    Args:
        src: the shipped file (:func:`e3relax.datasets.builtin.path`) when None, ``"builtin"`` or
            ``"-"``; else another pair file of the same kind.
        trust_pickle: unused.
        seed: seed of the split permutation over the sorted ids.
        ratios: train/val/test fractions.
    """

    def __init__(self, src: str | Path | None = None, *, trust_pickle: bool = False, seed: int = 0,
                 ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> None:
        from e3relax.datasets.builtin import path as builtin_path

        if src is None or str(src) in ("", "-", "builtin"):
            src = builtin_path()
        super().__init__(src, trust_pickle=trust_pickle, mode="pairs")
        self.seed, self.ratios = seed, tuple(ratios)

    def __iter__(self) -> Iterator[Item]:
        items = list(super().__iter__())
        ids = sorted(i.id for i in items if isinstance(i, RawPair))
        perm = np.random.default_rng(self.seed).permutation(len(ids))
        n_train = int(round(self.ratios[0] * len(ids)))
        n_val = int(round(self.ratios[1] * len(ids)))
        split = {}
        for rank, j in enumerate(perm):
            split[ids[j]] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
        for item in items:
            if isinstance(item, RawPair):
                item.split = split[item.id]
            yield item
