"""Outputs other tools read: for every --format, ASE's and pymatgen's own format guessing reads
each written file back as that format, whatever the input was called."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write

from e3relax.predict.io import output_names, safe_stem


@pytest.mark.parametrize("fmt,ase_name", [("cif", "cif"), ("vasp", "vasp"), ("extxyz", "extxyz")])
def test_every_format_round_trips_through_ase_and_pymatgen(tmp_path, fmt, ase_name):
    from ase.io.formats import filetype
    from pymatgen.core import Structure
    from pymatgen.io.registry import get_structure_format

    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    nacl = bulk("NaCl", "rocksalt", a=5.6, cubic=True)
    write(src / "POSCAR_NaCl", nacl, format="vasp")          # VASP word + underscore
    write(src / "a" / "CONTCAR", bulk("Si", "diamond", a=5.43), format="vasp")
    write(src / "b" / "CONTCAR", bulk("Ge", "diamond", a=5.65), format="vasp")
    write(src / "MgO.cif", bulk("MgO", "rocksalt", a=4.2))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "e3relax.cli.main", "predict", str(src), "--checkpoint", "pnictides",
                           "--no-ensemble", "--no-progress", "--out", str(out), "--format", fmt],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = sorted(p for p in out.iterdir() if p.name != "summary.csv")
    assert len(written) == 4, [p.name for p in written]
    for path in written:
        assert filetype(str(path)) == ase_name, path.name
        atoms = read(path)  # no format given: ASE guesses
        assert len(atoms) in (2, 8) and np.isfinite(atoms.positions).all()
        if fmt == "extxyz":
            with pytest.raises(ValueError):  # pymatgen has no extxyz reader; it must not take it for another format
                get_structure_format(filename=str(path))
        else:
            guessed = get_structure_format(filename=str(path)).name
            assert guessed == {"cif": "cif", "vasp": "poscar"}[fmt], path.name
            assert len(Structure.from_file(path)) == len(atoms)
    if fmt != "vasp":
        assert not any("POSCAR" in p.name.upper() or "CONTCAR" in p.name.upper() for p in written)


def test_safe_stem_and_collisions(tmp_path):
    assert safe_stem("POSCAR_NaCl", "cif") == "relaxed_NaCl"
    assert safe_stem("POSCAR_NaCl", "vasp") == "POSCAR_NaCl"
    assert safe_stem("x.cif_1", "vasp") == "x_cif_1"
    names = output_names([tmp_path / "a" / "POSCAR", tmp_path / "b" / "POSCAR"], "cif")
    assert sorted(names.values()) == ["a_relaxed", "b_relaxed"]
