"""Predictions keep the input's space group, one crystal gives one answer in any cell.

A small E3Relax with seeded random weights (perturbed far from its identity start) breaks symmetry
strongly, so each law is checked against a model that would fail it without the projection or
the canonical frame; every check runs in float64.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import spglib
import torch
from ase import Atoms
from ase.build import bulk

from e3relax.errors import InputError
from e3relax.predict import Relaxer
from e3relax.predict.prepare import FrameSettings, prepare
from e3relax.predict.symmetry import find_operations, project, symmetric_cell
from e3relax.registry import MODELS
from e3relax.testing import perturb_, random_orthogonal

SYMPREC = 0.01
GRAPH = {"name": "periodic_multi_edge", "cutoff": 5.0}


@functools.lru_cache(maxsize=None)
def model():
    torch.manual_seed(0)
    m = MODELS.build({"name": "e3relax", **MODELS.get("e3relax").test_config()}).double().eval()
    perturb_(m, 0.2, seed=3)
    return m


def relaxer(**kw) -> Relaxer:
    return Relaxer([model()], GRAPH, dtype=torch.float64, **kw)


def dataset(atoms: Atoms):
    return spglib.get_symmetry_dataset((atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers),
                                       symprec=SYMPREC)


CRYSTALS = {
    "Si": lambda: bulk("Si", "diamond", 5.43),
    "Si_cubic": lambda: bulk("Si", "diamond", 5.43, cubic=True),
    "NaCl": lambda: bulk("NaCl", "rocksalt", 5.64),
    "GaAs": lambda: bulk("GaAs", "zincblende", 5.65),
    "ZnO_wurtzite": lambda: bulk("ZnO", "wurtzite", a=3.25, c=5.21),
}


def rattled(seed: int = 0, n: int = 5) -> Atoms:
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(4.0, 5.0, 3)) + rng.uniform(-0.5, 0.5, (3, 3))
    return Atoms(numbers=rng.integers(3, 30, n), scaled_positions=rng.random((n, 3)), cell=cell, pbc=True)


@pytest.mark.parametrize("name", list(CRYSTALS))
def test_space_group_is_kept(name):
    atoms = CRYSTALS[name]()
    want = dataset(atoms)
    out = relaxer().relax(atoms)["final_structure"]
    got = dataset(out)
    assert got.number == want.number, f"{name}: {want.international} -> {got.international}"
    assert np.abs(out.cell.array - atoms.cell.array).max() > 0.05, "the model must really move the structure"


def test_without_projection_the_model_breaks_symmetry():
    broken = [name for name, make in CRYSTALS.items()
              if dataset(relaxer(symmetry=False).relax(make())["final_structure"]).number != dataset(make()).number]
    assert len(broken) == len(CRYSTALS), f"only {broken} lose their space group: the tests above would be vacuous"


def test_every_layer_is_projected():
    atoms = CRYSTALS["ZnO_wurtzite"]()
    traj = relaxer().relax(atoms, return_trajectory=True)["trajectory"]
    for frame in traj.to_atoms()[1:]:
        assert dataset(frame).number == dataset(atoms).number


def test_p1_structure_is_bit_identical_with_and_without_projection():
    atoms = rattled()
    assert len(find_operations(atoms.positions, atoms.cell.array, atoms.numbers, SYMPREC).rotations) == 1
    on = relaxer().relax(atoms, return_trajectory=True)
    off = relaxer(symmetry=False).relax(atoms, return_trajectory=True)
    assert np.array_equal(on["final_structure"].positions, off["final_structure"].positions)
    assert np.array_equal(on["final_structure"].cell.array, off["final_structure"].cell.array)
    for a, b in zip(on["trajectory"].atom_positions, off["trajectory"].atom_positions):
        assert np.array_equal(a, b)


def _deformed(atoms: Atoms, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A large random deformation of ``atoms``: strained cell, displaced atoms."""
    rng = np.random.default_rng(seed)
    cell = atoms.cell.array @ (np.eye(3) + 0.15 * rng.standard_normal((3, 3)))
    frac = atoms.get_scaled_positions(wrap=False) + 0.1 * rng.standard_normal((len(atoms), 3))
    return frac @ cell, cell


@pytest.mark.parametrize("name", ["Si_cubic", "ZnO_wurtzite"])
def test_projection_is_idempotent_symmetric_and_commutes_with_rotation(name):
    atoms = CRYSTALS[name]()
    ops = find_operations(atoms.positions, atoms.cell.array, atoms.numbers, SYMPREC)
    pos, cell = _deformed(atoms, 1)
    p1, c1 = project(ops, atoms.positions, atoms.cell.array, pos, cell)
    p2, c2 = project(ops, atoms.positions, atoms.cell.array, p1, c1)
    assert np.abs(p2 - p1).max() < 1e-12 and np.abs(c2 - c1).max() < 1e-12
    assert dataset(Atoms(atoms.numbers, positions=p1, cell=c1, pbc=True)).number == dataset(atoms).number
    assert np.sign(np.linalg.det(c1)) == np.sign(np.linalg.det(cell))
    q = random_orthogonal(5, 1.0).numpy()
    qp, qc = project(ops, atoms.positions @ q.T, atoms.cell.array @ q.T, pos @ q.T, cell @ q.T)
    assert np.abs(qp - p1 @ q.T).max() < 1e-10 and np.abs(qc - c1 @ q.T).max() < 1e-10


def test_symmetric_cell_is_rotation_free_and_keeps_handedness():
    atoms = CRYSTALS["ZnO_wurtzite"]()
    cell = atoms.cell.array
    rot = find_operations(atoms.positions, cell, atoms.numbers, SYMPREC).rotations
    q = random_orthogonal(3, 1.0).numpy()
    assert np.abs(symmetric_cell(cell @ q.T, rot, cell) - cell).max() < 1e-12  # a rigid rotation is removed
    strained = symmetric_cell(cell @ np.diag([1.05, 0.97, 1.1]), rot, cell)
    deform = np.linalg.solve(cell, strained)
    assert np.abs(deform - deform.T).max() < 1e-12 and np.linalg.eigvalsh(deform).min() > 0
    left = np.diag([1.0, 1.0, -1.0]) @ cell
    assert np.linalg.det(symmetric_cell(left @ np.diag([1.02, 0.98, 1.0]), rot, left)) < 0


@pytest.mark.parametrize("name", ["Si_cubic", "ZnO_wurtzite"])
def test_prediction_commutes_with_rotating_the_input(name):
    atoms = CRYSTALS[name]()
    q = random_orthogonal(7, 1.0).numpy()
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ q.T, scale_atoms=False)
    turned.positions = atoms.positions @ q.T
    a, b = relaxer().relax(atoms)["final_structure"], relaxer().relax(turned)["final_structure"]
    assert np.abs(b.positions - a.positions @ q.T).max() < 1e-8
    assert np.abs(b.cell.array - a.cell.array @ q.T).max() < 1e-8


def _periodic_mismatch(a: Atoms, b: Atoms) -> float:
    """Largest distance from an atom of ``a`` to the nearest periodic image of an atom of ``b`` of its
    species (images in ``b``'s lattice)."""
    frac = np.linalg.solve(b.cell.array.T, a.positions.T).T
    fb = b.get_scaled_positions(wrap=False)
    d = frac[:, None, :] - fb[None, :, :]
    d -= np.round(d)
    dist = np.linalg.norm(d @ b.cell.array, axis=-1)
    dist[a.numbers[:, None] != b.numbers[None, :]] = np.inf
    return float(dist.min(axis=1).max())


def test_supercell_gives_the_tiled_primitive_prediction():
    small, big = CRYSTALS["Si"](), CRYSTALS["Si_cubic"]()
    mult = np.round(big.cell.array @ np.linalg.inv(small.cell.array))
    for r, tol, cmp in ((relaxer(), 1e-8, "<"), (relaxer(canonical=False), 1e-3, ">")):
        ps, pb = r.relax(small)["final_structure"], r.relax(big)["final_structure"]
        err = max(_periodic_mismatch(pb, ps), float(np.abs(pb.cell.array - mult @ ps.cell.array).max()))
        assert (err < tol) if cmp == "<" else (err > tol), f"canonical={r.frames.canonical}: mismatch {err:.2e}"


def test_rocksalt_supercell_is_the_repeated_primitive():
    prim = CRYSTALS["NaCl"]()
    out_prim = relaxer().relax(prim)["final_structure"]
    out_super = relaxer().relax(prim * (2, 2, 2))["final_structure"]
    want = out_prim * (2, 2, 2)
    assert np.abs(out_super.positions - want.positions).max() < 1e-8
    assert np.abs(out_super.cell.array - want.cell.array).max() < 1e-8


def test_rattled_supercell_is_left_as_it_is():
    atoms = CRYSTALS["NaCl"]() * (2, 2, 2)
    atoms.rattle(0.05, seed=1)
    prep = prepare(atoms, FrameSettings(symprec=SYMPREC))
    assert not prep.frame.is_primitive_reduced and len(prep.atoms) == len(atoms)
    assert prep.ops.trivial
    clean = prepare(CRYSTALS["NaCl"]() * (2, 2, 2), FrameSettings(symprec=SYMPREC))
    assert clean.frame.is_primitive_reduced and len(clean.atoms) == 2


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), "x"])
def test_bad_symprec_is_one_clear_error(bad):
    with pytest.raises(InputError, match="symprec must be a positive number") as info:
        relaxer(symprec=bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_bad_symprec_on_the_command_line_is_one_line(command, tmp_path, capsys):
    from e3relax.cli.main import main

    bulk("Si", "diamond", 5.43).write(tmp_path / "POSCAR", format="vasp")
    argv = {"predict": ["predict", str(tmp_path / "POSCAR"), "--checkpoint", "pnictides", "--out", str(tmp_path)],
            "evaluate": ["evaluate", "--checkpoint", "pnictides", "--data", str(tmp_path / "none.lmdb")]}[command]
    assert main(argv + ["--symprec", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"e3relax {command}") and "--symprec must be a positive" in err[0]


def test_benchmark_predictions_go_through_the_relaxer_path():
    from e3relax.benchmark.predict import predict
    from e3relax.engine.evaluation import evaluate
    from e3relax.records import make_record, record_to_data
    from e3relax.registry import GRAPHS
    from e3relax.threads import single_thread_if

    records = []
    for i, name in enumerate(["NaCl", "ZnO_wurtzite"]):
        u = CRYSTALS[name]()
        r = u.copy()
        r.set_cell(u.cell.array * 1.03, scale_atoms=True)
        records.append(record_to_data(make_record(u, r, f"s{i}", GRAPHS.build(GRAPH))[0], torch.float64))
    raw = predict(model(), records, torch.device("cpu"), torch.float64, 2, FrameSettings(False, False))
    with single_thread_if(True):  # as the Relaxer runs a small batch: the same summation order
        bare = evaluate(model(), records, progress=None, keep_structures=True)
    for a, b in zip(raw.structures, bare.structures):
        assert np.array_equal(a.positions, b.positions)
    framed = predict(model(), records, torch.device("cpu"), torch.float64, 2)
    for inp, out in zip(framed.inputs, framed.structures):
        assert dataset(out).number == dataset(inp).number


@pytest.mark.parametrize("name", ["Si", "ZnO_wurtzite"])
def test_symmetric_crystals_obey_the_basis_and_origin_laws(name):
    """Bases related by a symmetry of the crystal tie in the canonical choice; the projection makes
    the answer the same whichever is taken."""
    from e3relax.testing.frames import frame_law_errors

    err = frame_law_errors(relaxer(), CRYSTALS[name](), seed=2)
    assert max(err.values()) < 1e-5, err
