"""Tiny dataset layouts written with ASE for the LMDB/conversion/importer tests.

Seeded, 2-6 atom structures in skewed cells. Each writer returns the ids it wrote per outcome
so the tests can check the validation report item by item.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write

from e3relax.graph.base import GraphBuilder, GraphEdges


class AllPairsGraph(GraphBuilder):
    """Brute-force all-pairs graph within the home cell (used where no registered builder exists)."""

    def __call__(self, pos, cell, pbc=(True, True, True)) -> GraphEdges:
        n = len(pos)
        i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        mask = i != j
        ei = np.stack([j[mask], i[mask]]).astype(np.int64)
        order = np.argsort(ei[1], kind="stable")
        ei = ei[:, order]
        return GraphEdges(ei, np.zeros((ei.shape[1], 3), np.int64), np.zeros(ei.shape[1], np.int64))

    def params(self) -> dict:
        return {"name": "all_pairs_test"}


def graph_name() -> str:
    """The registered default builder when present, else the brute-force test graph (dotted path)."""
    from e3relax.registry import GRAPHS

    return "periodic_multi_edge" if "periodic_multi_edge" in GRAPHS else "data_fixtures.AllPairsGraph"


def graph_spec() -> dict:
    return {"name": graph_name()}


def random_atoms(rng: np.random.Generator, symbols: str = "NaCl", n: int | None = None) -> Atoms:
    """A small crystal with well separated atoms in a skewed cell."""
    cell = np.diag([3.5, 3.8, 4.1]) + rng.uniform(-0.4, 0.4, (3, 3))
    sym = list(Atoms(symbols).get_chemical_symbols())
    if n is not None:
        sym = (sym * n)[:n]
    grid = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]])
    frac = grid[: len(sym)] + rng.uniform(-0.03, 0.03, (len(sym), 3))
    return Atoms(sym, scaled_positions=frac, cell=cell, pbc=True)


def relax_like(atoms: Atoms, rng: np.random.Generator, rotate_deg: float = 0.0) -> Atoms:
    """A 'relaxed' partner: strained cell, moved atoms, optionally rigidly rotated about z."""
    out = atoms.copy()
    strain = rng.uniform(-0.05, 0.05, (3, 3))
    out.set_cell(atoms.cell.array @ (np.eye(3) + (strain + strain.T) / 2), scale_atoms=True)  # no rotation
    out.positions += rng.normal(0, 0.05, out.positions.shape)
    if rotate_deg:
        out.rotate(rotate_deg, "z", rotate_cell=True)
    return out


def poscar_text(atoms: Atoms) -> str:
    buf = io.StringIO()
    write(buf, atoms, format="vasp", direct=True)
    return buf.getvalue()


def make_pair_texts(seed: int = 0) -> tuple[dict, dict, dict[str, str]]:
    """``(unrelaxed texts, relaxed texts, expected outcome per id)`` for a poscar_pairs fixture."""
    rng = np.random.default_rng(seed)
    u, r, expect = {}, {}, {}
    for k in range(6):
        a = random_atoms(rng, "NaCl" if k % 2 else "MgO", n=2 + k % 3)
        u[f"good{k}"], r[f"good{k}"] = poscar_text(a), poscar_text(relax_like(a, rng, rotate_deg=25.0 * (k == 0)))
        expect[f"good{k}"] = "ok"
    a = random_atoms(rng, "NaCl", n=4)
    u["onlyu"] = poscar_text(a)
    expect["onlyu"] = "missing_partner"
    r["onlyr"] = poscar_text(a)
    expect["onlyr"] = "missing_partner"
    u["garbled"], r["garbled"] = "this is not a POSCAR\n1.0\nxx\n", poscar_text(a)
    expect["garbled"] = "unreadable"
    b = Atoms("NaClNaCl", scaled_positions=a.get_scaled_positions(), cell=a.cell, pbc=True)
    c = Atoms("ClNaClNa", scaled_positions=a.get_scaled_positions(), cell=a.cell, pbc=True)
    u["swapped"], r["swapped"] = poscar_text(b), poscar_text(c)
    expect["swapped"] = "species"
    u["count"], r["count"] = poscar_text(a), poscar_text(a[:2])
    expect["count"] = "atom_count"
    d = a.copy()
    d.positions[1] = d.positions[0] + 0.01
    u["clash"], r["clash"] = poscar_text(d), poscar_text(a)
    expect["clash"] = "coincident"
    return u, r, expect


def _tar(path: Path, folder: str, texts: dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for sid, text in sorted(texts.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"{folder}/POSCAR_{sid}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def write_poscar_pairs(root: Path, as_tarballs: bool = True, seed: int = 0) -> dict[str, str]:
    """Write the layout (tarballs or folders + energy CSV) under ``root``; returns expected outcomes."""
    u, r, expect = make_pair_texts(seed)
    root.mkdir(parents=True, exist_ok=True)
    if as_tarballs:
        _tar(root / "unrelaxed_structures.tar.gz", "unrelaxed_hypotheticals", u)
        _tar(root / "relaxed_structures.tar.gz", "relaxed_hypotheticals", r)
    else:
        for side, texts in (("unrelaxed", u), ("relaxed", r)):
            (root / side).mkdir()
            for sid, text in texts.items():
                (root / side / f"POSCAR_{sid}").write_text(text)
    lines = ["composition,structure_id,energyperatom"] + [f"X,{sid},{-1.5 - i}" for i, sid in enumerate(sorted(expect))]
    (root / "energies.csv").write_text("\n".join(lines) + "\n")
    return expect


def write_xdatcar(path: Path, frames: list[Atoms]) -> None:
    write(str(path), frames, format="vasp-xdatcar")


def write_vasp_dirs(root: Path, seed: int = 0) -> dict[str, str]:
    """Run folders in the srnbh layout, including incomplete ones; returns expected outcomes."""
    rng = np.random.default_rng(seed)
    expect = {}
    for k in range(4):
        run = root / str(k + 1)
        (run / "MP_inputs").mkdir(parents=True)
        a = random_atoms(rng, "SrH", n=3 + k % 2)
        mid = relax_like(a, rng)
        fin = relax_like(mid, rng)
        write(str(run / "MP_inputs" / "OG_POSCAR"), a, format="vasp", direct=True)
        write(str(run / "MP_inputs" / "CONTCAR"), mid, format="vasp", direct=True)
        write_xdatcar(run / "MP_inputs" / "XDATCAR", [a, mid])
        write(str(run / "CONTCAR"), fin, format="vasp", direct=True)
        write_xdatcar(run / "XDATCAR", [mid, fin, fin])
        expect[str(k + 1)] = "ok"
    (root / "10").mkdir()  # no unrelaxed structure: incomplete on purpose
    write(str(root / "10" / "CONTCAR"), fin, format="vasp", direct=True)
    expect["10"] = "missing_partner"
    (root / "11" / "MP_inputs").mkdir(parents=True)
    write(str(root / "11" / "MP_inputs" / "OG_POSCAR"), a, format="vasp", direct=True)
    (root / "11" / "CONTCAR").write_text("")  # failed run: empty CONTCAR
    expect["11"] = "unreadable"
    return expect
