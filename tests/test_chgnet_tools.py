"""CHGNet + FIRE reference relaxation helpers."""
from __future__ import annotations

import numpy as np
import pytest

from e3relax.chgnet_tools import cell_filter_mask


def test_cell_filter_mask_keeps_vacuum_vector_fixed():
    assert cell_filter_mask([True, True, True]) is None
    # Voigt order xx, yy, zz, yz, xz, xy: only in-plane components move for a slab
    assert cell_filter_mask([True, True, False]) == [1, 1, 0, 0, 0, 1]
    assert cell_filter_mask([False, True, True]) == [0, 1, 1, 1, 0, 0]


def test_chgnet_relax_converges_and_keeps_slab_vacuum():
    pytest.importorskip("chgnet", reason="optional extra 'chgnet' not installed")
    from ase.build import bulk, mx2

    from e3relax.chgnet_tools import chgnet_energy_per_atom, chgnet_relax

    nacl = bulk("NaCl", "rocksalt", a=5.9)
    nacl.rattle(0.05, seed=1)
    res = chgnet_relax(nacl, fmax=0.05, max_steps=300)
    assert res.converged and 0 < res.steps < 300
    assert res.energy_per_atom < res.initial_energy_per_atom
    assert list(res.atoms.get_chemical_symbols()) == list(nacl.get_chemical_symbols())
    # the rattled, expanded cell shrinks towards CHGNet's lattice constant (~5.7 A)
    assert res.atoms.get_volume() < nacl.get_volume()
    e = chgnet_energy_per_atom([res.atoms])
    assert np.isclose(e[0], res.energy_per_atom, atol=1e-4)

    slab = mx2("MoS2", a=3.3, vacuum=8.0)
    slab.pbc = (True, True, False)
    c_before = slab.cell[2].copy()
    res2 = chgnet_relax(slab, fmax=0.1, max_steps=60)
    np.testing.assert_allclose(res2.atoms.cell[2], c_before, atol=1e-8)


def test_relax_iter_in_processes_matches_one_process():
    """The comparison's CHGNet workers: the same relaxations, in order, whether in 2 processes or in this one."""
    pytest.importorskip("chgnet", reason="optional extra 'chgnet' not installed")
    from ase.build import bulk

    from e3relax.benchmark.chgnet_compare import relax_iter

    starts = []
    for i, (name, kind, a) in enumerate([("NaCl", "rocksalt", 5.9), ("Si", "diamond", 5.6), ("KCl", "rocksalt", 6.5)]):
        atoms = bulk(name, kind, a=a)
        atoms.rattle(0.05, seed=i)
        starts.append(atoms)
    here = list(relax_iter(starts, fmax=0.05, max_steps=4, jobs=1))
    spread = list(relax_iter(starts, fmax=0.05, max_steps=4, jobs=2))
    assert [r["steps"] for r in here] == [r["steps"] for r in spread] == [4, 4, 4]
    for a, b, start in zip(here, spread, starts):
        assert b["final"]["z"] == start.numbers.tolist() and b["cpu_s"] > 0
        np.testing.assert_allclose(b["final"]["pos"], a["final"]["pos"], atol=1e-5)
        np.testing.assert_allclose(b["final"]["cell"], a["final"]["cell"], atol=1e-5)
        assert abs(a["energy_per_atom"] - b["energy_per_atom"]) < 1e-5
