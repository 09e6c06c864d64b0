"""``e3relax predict`` says in plain words why a file cannot be read: not a CIF, a truncated CIF or
POSCAR, a counts line that does not match the coordinates (not ASE's empty AssertionError,
``pop from empty list`` or a numpy broadcast error)."""
from __future__ import annotations

import csv

import pytest
from ase.build import bulk
from ase.io import write

from e3relax.predict.io import read_structures


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    nacl = bulk("NaCl", "rocksalt", a=5.6)
    write(d / "good.cif", nacl)
    cif = (d / "good.cif").read_text()
    write(d / "POSCAR", nacl, format="vasp")
    poscar = (d / "POSCAR").read_text().splitlines()
    out = {
        "notcif.cif": "hello\nthis is not a crystal\n",
        "cut_header.cif": cif[: cif.index("_space_group")],
        "cut_loop.cif": cif[: cif.index("_atom_site_fract_x") + 40],
        "cut_row.cif": cif[: cif.rindex("Cl1") + 8],
        "empty.cif": "",
        "POSCAR_counts": "\n".join(poscar[:6] + ["  2 2"] + poscar[7:]) + "\n",
        "POSCAR_cut": "\n".join(poscar[:4]) + "\n",
        "POSCAR_junk": "foo\nbar\n",
    }
    for name, text in out.items():
        (d / name).write_text(text)
    return d


@pytest.mark.parametrize("name, reason", [
    ("notcif.cif", "not a CIF (no 'data_' block)"),
    ("cut_header.cif", "truncated CIF, or one without atoms (no '_atom_site' loop)"),
    ("cut_loop.cif", "truncated CIF (its '_atom_site' loop has no complete row)"),
    ("cut_row.cif", "truncated CIF (the last row of a loop is incomplete)"),
    ("empty.cif", "empty file"),
    ("POSCAR_counts", "the counts line (line 7: '2 2', 4 atoms) does not match the coordinates "
                      "(2 coordinate lines follow)"),
    ("POSCAR_cut", "truncated POSCAR/CONTCAR (4 lines; it ends before the three lattice vectors)"),
    ("POSCAR_junk", "not a POSCAR/CONTCAR (line 2 must be the scaling factor, got 'bar')"),
])
def test_plain_reasons(files, name, reason):
    with pytest.raises(ValueError) as info:
        read_structures(files / name)
    assert str(info.value) == f"{files / name}: not a readable structure file: {reason}"
    for cryptic in ("AssertionError", "pop from empty list", "broadcast", "IndexError"):
        assert cryptic not in str(info.value)


def test_good_files_still_read(files):
    assert len(read_structures(files / "good.cif")[0]) == 2
    assert len(read_structures(files / "POSCAR")[0]) == 2
    write(files / "my_structure", bulk("Si", "diamond", a=5.43), format="vasp")  # a POSCAR under any name
    assert len(read_structures(files / "my_structure")[0]) == 2


def test_predict_summary_carries_the_reason(files, tmp_path):
    import torch

    import e3relax.models  # noqa: F401
    from e3relax.cli.main import main
    from e3relax.registry import MODELS

    tiny = {"name": "e3relax", "hidden_channels": 8, "num_layers": 2, "num_rbf": 8}
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    torch.save({"format_version": 1, "config": {"model": tiny}, "ema_model": MODELS.build(tiny).state_dict()}, ckpt)
    out = tmp_path / "out"
    assert main(["predict", str(files / "good.cif"), str(files / "notcif.cif"), str(files / "POSCAR_counts"),
                 "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"]) == 1
    with open(out / "summary.csv") as fh:
        errors = {r["input"]: r["error"] for r in csv.DictReader(fh) if r["error"]}
    assert errors[str(files / "notcif.cif")].endswith("not a CIF (no 'data_' block)")
    assert "does not match the coordinates" in errors[str(files / "POSCAR_counts")]
