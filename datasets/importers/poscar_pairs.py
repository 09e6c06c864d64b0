"""Importer ``poscar_pairs``: two tarballs or folders of ``POSCAR_<id>`` files with the same names.

Layout (the NREL hypothetical pnictides, Pandey et al. 2021)::

    SRC/
      unrelaxed_hypothetical_structures.tar.gz   -> unrelaxed_hypotheticals/POSCAR_<id>
      relaxed_hypothetical_structures.tar.gz     -> relaxed_hypotheticals/POSCAR_<id>
      hypothetical_structure_energies.csv        (optional) composition,structure_id,energyperatom

Each side may also be a folder of ``POSCAR_<id>`` files. By default the side whose name starts
with ``unrelaxed`` and the one whose name starts with ``relaxed`` are found in ``SRC``; pass
``unrelaxed=`` / ``relaxed=`` to name them. Tarballs are read directly (no extraction). An id
present on one side only is reported as ``missing_partner``; a file ASE cannot parse as
``unreadable``. No published split: the converter applies a seeded ratio.
"""
from __future__ import annotations

import csv
import io
import logging
import tarfile
from pathlib import Path
from typing import Any, Iterator

from e3relax.datasets.importers.base import Importer, Item, RawPair, Skipped
from e3relax.registry import IMPORTERS

log = logging.getLogger(__name__)

_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")


def parse_poscar(text: str, source: str):
    """Parse POSCAR/CONTCAR text into ``ase.Atoms`` (raises ``ValueError`` naming ``source``)."""
    from ase.io import read

    if not text.strip():
        raise ValueError(f"{source}: empty file")
    try:
        return read(io.StringIO(text), format="vasp")
    except Exception as exc:  # ASE raises many types for malformed files
        raise ValueError(f"{source}: not a readable POSCAR ({type(exc).__name__}: {exc})") from exc


def _is_tarball(path: Path) -> bool:
    return path.is_file() and path.name.endswith(_TAR_SUFFIXES)


def read_side(path: Path, prefix: str) -> dict[str, tuple[str | None, str]]:
    """``id -> (text or None if not UTF-8, source)`` for every ``<prefix><id>`` file of a tarball or folder."""
    out: dict[str, tuple[str | None, str]] = {}

    def add(name: str, data: bytes, source: str) -> None:
        sid = name[len(prefix):]
        try:
            out[sid] = (data.decode("utf-8"), source)
        except UnicodeDecodeError:
            out[sid] = (None, source)

    if _is_tarball(path):
        try:
            with tarfile.open(path, "r:*") as tf:
                for member in tf:
                    name = Path(member.name).name
                    if member.isfile() and name.startswith(prefix) and len(name) > len(prefix):
                        fh = tf.extractfile(member)
                        add(name, fh.read() if fh else b"", f"{path.name}:{member.name}")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ValueError(f"poscar_pairs: cannot read tarball '{path}': {exc}") from exc
    elif path.is_dir():
        for f in sorted(path.iterdir()):
            if f.is_file() and f.name.startswith(prefix) and len(f.name) > len(prefix):
                try:
                    add(f.name, f.read_bytes(), str(f))
                except OSError:
                    out[f.name[len(prefix):]] = (None, str(f))
    else:
        raise ValueError(f"poscar_pairs: '{path}' is neither a folder nor a tarball ({', '.join(_TAR_SUFFIXES)})")
    return out


def read_energy_csv(path: Path) -> dict[str, float]:
    """``structure_id -> energyperatom`` from a CSV with those columns (header required)."""
    energies: dict[str, float] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or ())
        if not {"structure_id", "energyperatom"} <= cols:
            raise ValueError(f"poscar_pairs: energy CSV '{path}' needs columns structure_id,energyperatom; has {sorted(cols)}")
        for line, row in enumerate(reader, start=2):
            try:
                energies[row["structure_id"].strip()] = float(row["energyperatom"])
            except (TypeError, ValueError):
                log.warning("%s line %d: energy %r is not a number; ignored", path, line, row.get("energyperatom"))
    return energies


def _find_side(src: Path, start: str) -> Path:
    found = [p for p in sorted(src.iterdir()) if p.name.lower().startswith(start) and (p.is_dir() or _is_tarball(p))]
    if len(found) != 1:
        what = "none" if not found else ", ".join(p.name for p in found)
        raise ValueError(
            f"poscar_pairs: expected one tarball or folder named '{start}*' in '{src}', found {what}; "
            f"pass {start}=PATH"
        )
    return found[0]


@IMPORTERS.register("poscar_pairs")
class PoscarPairsImporter(Importer):
    """Pairs of ``POSCAR_<id>`` files from two tarballs or folders, with an optional energy CSV.

    Args:
        src: folder holding both sides (or the unrelaxed side when ``relaxed`` is given).
        unrelaxed: tarball or folder of unrelaxed files (default: the ``unrelaxed*`` entry of src).
        relaxed: tarball or folder of relaxed files (default: the ``relaxed*`` entry of src).
        energy_csv: ``composition,structure_id,energyperatom`` CSV; default: the one ``*.csv``
            file of src whose header has those columns, if any. ``False`` disables it.
        prefix: file-name prefix before the id.
    """

    def __init__(self, src: str | Path, *, unrelaxed: str | Path | None = None, relaxed: str | Path | None = None,
                 energy_csv: str | Path | bool | None = None, prefix: str = "POSCAR_", trust_pickle: bool = False) -> None:
        super().__init__(src, trust_pickle=trust_pickle)
        base = self.src if self.src.is_dir() else self.src.parent
        self.unrelaxed = Path(base, unrelaxed) if unrelaxed else _find_side(base, "unrelaxed")
        self.relaxed = Path(base, relaxed) if relaxed else _find_side(base, "relaxed")
        for p in (self.unrelaxed, self.relaxed):
            if not p.exists():
                raise FileNotFoundError(f"poscar_pairs: '{p}' does not exist")
        if energy_csv is False:
            self.energy_csv = None
        elif energy_csv:
            self.energy_csv = Path(base, energy_csv)
        else:
            self.energy_csv = self._find_csv(base)
        self.prefix = prefix
        self._tasks: list[tuple] | None = None

    @staticmethod
    def _find_csv(base: Path) -> Path | None:
        for p in sorted(base.glob("*.csv")):
            with open(p, encoding="utf-8", errors="replace") as fh:
                header = fh.readline()
            if "structure_id" in header and "energyperatom" in header:
                return p
        return None

    def __getstate__(self) -> dict[str, Any]:  # workers need the options, not the cached texts
        state = dict(self.__dict__)
        state["_tasks"] = None
        return state

    def _build(self) -> list[tuple]:
        u = read_side(self.unrelaxed, self.prefix)
        r = read_side(self.relaxed, self.prefix)
        energies = read_energy_csv(self.energy_csv) if self.energy_csv else {}
        log.info("poscar_pairs: %d unrelaxed, %d relaxed files, %d energies", len(u), len(r), len(energies))
        tasks = []
        for sid in sorted(set(u) | set(r)):
            ut, us = u.get(sid, (None, None))
            rt, rs = r.get(sid, (None, None))
            tasks.append((sid, ut, rt, us, rs, energies.get(sid)))
        return tasks

    def tasks(self) -> Iterator[tuple]:
        if self._tasks is None:
            self._tasks = self._build()
        return iter(self._tasks)

    def __len__(self) -> int:
        if self._tasks is None:
            self._tasks = self._build()
        return len(self._tasks)

    def load(self, task: tuple) -> Item:
        sid, u_text, r_text, u_src, r_src, energy = task
        if u_src is None or r_src is None:
            have, lacks = (u_src, "relaxed") if u_src is not None else (r_src, "unrelaxed")
            return Skipped(sid, f"{have} has no {lacks} partner '{self.prefix}{sid}'", "missing_partner", have or "")
        atoms = []
        for text, source in ((u_text, u_src), (r_text, r_src)):
            if text is None:
                return Skipped(sid, f"{source}: not a UTF-8 text file", "unreadable", source)
            try:
                atoms.append(parse_poscar(text, source))
            except ValueError as exc:
                return Skipped(sid, str(exc), "unreadable", source)
        return RawPair(id=sid, unrelaxed=atoms[0], relaxed=atoms[1], energy=energy, source=u_src)
