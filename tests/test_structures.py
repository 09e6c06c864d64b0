"""Conversion, validation, periodic minimum distance, unwrapping and rigid-rotation removal."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from ase import Atoms
from scipy.spatial.transform import Rotation

from e3relax.structures import (
    PairValidationError,
    ValidationThresholds,
    as_atoms,
    min_periodic_distance,
    remove_rigid_rotation,
    to_structure,
    unwrap_positions,
    validate_pair,
    validate_structure,
)


def triclinic_cell(rng: np.random.Generator, skew: float = 0.4) -> np.ndarray:
    return np.diag(rng.uniform(3.0, 5.0, 3)) + rng.uniform(-skew, skew, (3, 3)) * 3.0


def random_atoms(rng: np.random.Generator, n: int = 5, cell: np.ndarray | None = None) -> Atoms:
    cell = triclinic_cell(rng) if cell is None else cell
    while True:
        a = Atoms(numbers=rng.integers(1, 30, n), scaled_positions=rng.random((n, 3)), cell=cell, pbc=True)
        if min_periodic_distance(a.positions, a.cell.array, a.pbc, 1.0) > 0.9:
            return a


def brute_min_distance(pos, cell, reach=4):
    best = math.inf
    for k in itertools.product(range(-reach, reach + 1), repeat=3):
        shift = np.array(k) @ cell
        d = np.linalg.norm(pos[None, :, :] + shift - pos[:, None, :], axis=-1)
        if k == (0, 0, 0):
            d = d + np.eye(len(pos)) * 1e9
        best = min(best, d.min())
    return best


def sym_strain(rng, size=0.05):
    e = rng.uniform(-size, size, (3, 3))
    return np.eye(3) + (e + e.T) / 2


# --- conversion --------------------------------------------------------------------------------

def test_as_atoms_to_structure_round_trip():
    rng = np.random.default_rng(0)
    a = random_atoms(rng)
    s = to_structure(a)
    b = as_atoms(s)
    np.testing.assert_allclose(b.positions, a.positions, atol=1e-12)
    np.testing.assert_allclose(b.cell.array, a.cell.array, atol=1e-12)
    assert b.numbers.tolist() == a.numbers.tolist()
    assert to_structure(s) is s
    assert as_atoms(a) is not a  # a copy: callers may mutate it
    with pytest.raises(TypeError, match="expected ase.Atoms or pymatgen Structure, got list"):
        as_atoms([1, 2])


# --- minimum periodic distance -----------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_min_periodic_distance_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    cell = triclinic_cell(rng, skew=0.6)
    pos = rng.random((4, 3)) @ cell
    ref = brute_min_distance(pos, cell)
    assert min_periodic_distance(pos, cell, [True] * 3, ref + 0.1) == pytest.approx(ref, abs=1e-10)
    assert min_periodic_distance(pos, cell, [True] * 3, ref - 0.01) == math.inf


def test_one_atom_cell_uses_its_own_images():
    cell = np.array([[3.0, 0, 0], [2.9, 0.4, 0], [0.3, 0.2, 4.0]])  # shortest vector is b - a, not a row
    ref = brute_min_distance(np.zeros((1, 3)), cell)
    assert ref == pytest.approx(np.linalg.norm(cell[1] - cell[0]))
    assert min_periodic_distance(np.zeros((1, 3)), cell, [True] * 3, 1.0) == pytest.approx(ref)


# --- validation --------------------------------------------------------------------------------

def _err(fn, *args) -> PairValidationError:
    with pytest.raises(PairValidationError) as exc:
        fn(*args)
    return exc.value


def test_validate_pair_error_codes_and_messages():
    rng = np.random.default_rng(1)
    u = random_atoms(rng, 4)
    r = u.copy()
    r.positions += 0.05
    assert validate_pair(u, r, "ok") == []

    e = _err(validate_pair, u, u[:3], "mp-1")
    assert (e.code, e.sid, str(e)) == ("atom_count", "mp-1", "structure 'mp-1': unrelaxed has 4 atoms, "
                                       "relaxed has 3 [atom_count]")
    assert isinstance(e, ValueError)

    r2 = u.copy()
    r2.numbers[2] = 83 if u.numbers[2] != 83 else 84
    e = _err(validate_pair, u, r2, "mp-2")
    assert e.code == "species" and str(e).startswith("structure 'mp-2': species sequences differ, first at atom 2")

    r3 = u.copy()
    r3.positions[1, 0] = np.nan
    assert _err(validate_pair, u, r3, "mp-3").code == "non_finite"

    flat = u.copy()
    flat.cell[2] = flat.cell[0] + flat.cell[1]  # coplanar lattice vectors
    e = _err(validate_pair, flat, flat, "mp-4")
    assert e.code == "degenerate_cell" and "mp-4" in str(e)

    x = u.copy()
    x.numbers[0] = 0
    assert _err(validate_pair, x, x, "mp-5").code == "element"

    flip = u.copy()
    flip.set_cell(-u.cell.array, scale_atoms=True)  # left-handed
    e = _err(validate_pair, u, flip, "mp-6")
    assert e.code == "handedness"


def test_coincident_through_periodic_image_and_short_contact_warning():
    cell = np.diag([4.0, 4.0, 4.0])
    coincident = Atoms("Si2", positions=[[0.02, 1, 1], [3.97, 1, 1]], cell=cell, pbc=True)  # 0.05 A via image
    e = _err(validate_structure, coincident, "img")
    assert e.code == "coincident" and str(e).startswith("structure 'img': input structure has atoms 0.05 A apart")
    short = Atoms("H2", positions=[[0, 0, 0], [0.3, 0, 0]], cell=cell, pbc=True)
    w = validate_structure(short, "short")
    assert len(w) == 1 and "0.300 A" in w[0] and "'short'" in w[0]
    assert validate_structure(short, "short", ValidationThresholds(warn_distance=0.25)) == []
    assert _err(validate_structure, short, "s", ValidationThresholds(min_distance=0.35)).code == "coincident"


def test_left_handed_cells_are_kept():
    rng = np.random.default_rng(2)
    u = random_atoms(rng, 3)
    lh = u.copy()
    lh.set_cell(u.cell.array[[1, 0, 2]], scale_atoms=False)
    assert np.linalg.det(lh.cell.array) < 0
    assert validate_pair(lh, lh, "lh") == []


# --- unwrapping --------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_unwrap_matches_brute_force_for_large_shifts_and_skewed_cells(seed):
    rng = np.random.default_rng(seed)
    cell_r = triclinic_cell(rng, skew=0.8)
    pos_u = rng.random((8, 3)) @ cell_r
    jitter = rng.normal(scale=0.6, size=(8, 3))
    k = rng.integers(-3, 4, (8, 3))
    pos_r = pos_u + jitter + k @ cell_r
    out = unwrap_positions(pos_u, pos_r, cell_r)
    grid = np.array(list(itertools.product(range(-8, 9), repeat=3)))
    cand = pos_r[:, None, :] + grid @ cell_r
    brute = cand[np.arange(8), np.linalg.norm(cand - pos_u[:, None], axis=-1).argmin(1)]
    np.testing.assert_allclose(out, brute, atol=1e-10)
    shift = (out - pos_r) @ np.linalg.inv(cell_r)
    np.testing.assert_allclose(shift, np.rint(shift), atol=1e-9)


def test_unwrap_leaves_non_periodic_axes_alone():
    cell = np.diag([3.0, 3.0, 20.0])
    pos_u = np.array([[0.1, 0.1, 1.0]])
    pos_r = np.array([[2.9, 0.1, 19.5]])
    out = unwrap_positions(pos_u, pos_r, cell, pbc=[True, True, False])
    np.testing.assert_allclose(out, [[-0.1, 0.1, 19.5]], atol=1e-12)


# --- rigid rotation ----------------------------------------------------------------------------

def test_pure_rotation_of_strained_cell_is_removed_exactly():
    rng = np.random.default_rng(3)
    cell_u = triclinic_cell(rng)
    s = sym_strain(rng)
    cell_s = cell_u @ s
    pos_s = rng.random((5, 3)) @ cell_s
    q = Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix()
    cell2, pos2, angle = remove_rigid_rotation(cell_u, cell_s @ q.T, pos_s @ q.T)
    np.testing.assert_allclose(cell2, cell_s, atol=1e-12)
    np.testing.assert_allclose(pos2, pos_s, atol=1e-12)
    assert angle == pytest.approx(math.degrees(np.linalg.norm([0.3, -0.2, 0.5])), abs=1e-9)


def test_symmetric_strain_gives_zero_angle_and_unchanged_output():
    rng = np.random.default_rng(4)
    cell_u = triclinic_cell(rng)
    cell_r = cell_u @ sym_strain(rng, 0.1)
    pos_r = rng.random((4, 3)) @ cell_r
    cell2, pos2, angle = remove_rigid_rotation(cell_u, cell_r, pos_r)
    assert angle < 1e-6
    np.testing.assert_allclose(cell2, cell_r, atol=1e-12)
    np.testing.assert_allclose(pos2, pos_r, atol=1e-12)


def test_rotation_removal_keeps_shape_volume_and_distances():
    import torch

    from e3relax.metrics import structure_metrics

    rng = np.random.default_rng(5)
    cell_u = triclinic_cell(rng)
    q = Rotation.from_rotvec([-0.7, 0.1, 0.2]).as_matrix()
    cell_r = cell_u @ sym_strain(rng) @ q.T
    pos_r = rng.random((4, 3)) @ cell_r
    cell2, pos2, _ = remove_rigid_rotation(cell_u, cell_r, pos_r)
    batch = torch.zeros(4, dtype=torch.long)
    p, c = torch.as_tensor, lambda x: torch.as_tensor(x)[None]  # noqa: E731
    before = structure_metrics(p(pos_r), c(cell_r), p(pos_r), c(cell_u), batch)
    after = structure_metrics(p(pos2), c(cell2), p(pos2), c(cell_u), batch)
    for k in ("shape_dev", "mae_vol", "abc_mae", "angle_mae"):
        assert float(after[k]) == pytest.approx(float(before[k]), rel=1e-10, abs=1e-10)
    d = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(d(pos2), d(pos_r), atol=1e-12)


def test_rotation_removal_rejects_reflection():
    cell_u = np.diag([3.0, 4.0, 5.0])
    with pytest.raises(ValueError, match="handedness"):
        remove_rigid_rotation(cell_u, cell_u @ np.diag([1.0, 1.0, -1.0]), np.zeros((1, 3)))
