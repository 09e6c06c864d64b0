"""Relaxer API, vacuum handling and flags, with tiny checkpoints created here (seeded, small)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

import e3relax.models  # noqa: F401 - registers the models
from e3relax.predict import Relaxer
from e3relax.predict.geometry import SanityLimits, close_contacts, keep_vacuum, sanity_flags, vacuum_directions
from e3relax.predict.pretrained import export_slim, resolve_checkpoints
from e3relax.registry import GRAPHS, MODELS

#: an untrained model that moves atoms and cell (the reference initialisation; the default starts at its input)
TINY = {"name": "e3relax", "hidden_channels": 8, "num_layers": 2, "num_rbf": 8, "identity_init": False}
GRAPH = {"name": "periodic_multi_edge", "cutoff": 5.0, "max_neighbors": 12}


def tiny_checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = MODELS.build(TINY)
    torch.save({"format_version": 1, "config": {"model": TINY, "graph": GRAPH},
                "ema_model": model.state_dict(), "predict": {"volume_ratio": [0.8, 1.2]}}, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("ckpt")
    return [tiny_checkpoint(d / f"m{s}.pt", s) for s in (0, 1)]


def structures() -> list[Atoms]:
    rng = np.random.default_rng(0)
    out = [bulk("NaCl", "rocksalt", a=5.6), bulk("Si", "diamond", a=5.43), bulk("Cu", "fcc", a=3.6) * (2, 1, 1)]
    for a in out:
        a.rattle(0.05, seed=int(rng.integers(1000)))
    return out


def test_relax_types_order_trajectory(ckpts):
    from pymatgen.io.ase import AseAtomsAdaptor

    relaxer = Relaxer.from_checkpoint(ckpts[0])
    atoms = structures()
    struct = AseAtomsAdaptor.get_structure(atoms[1])
    one = relaxer.relax(atoms[2], return_trajectory=True)
    assert isinstance(one, dict) and isinstance(one["final_structure"], Atoms)
    assert list(one["final_structure"].numbers) == list(atoms[2].numbers)
    traj = one["trajectory"]
    assert len(traj) == TINY["num_layers"] + 1
    np.testing.assert_allclose(traj.atom_positions[0], atoms[2].positions)
    np.testing.assert_allclose(traj.atom_positions[-1], one["final_structure"].positions)
    np.testing.assert_allclose(traj.cells[-1], one["final_structure"].cell.array)
    assert one["uncertainty"] is None  # one model: no spread
    many = relaxer.relax([atoms[0], struct])
    assert isinstance(many, list) and len(many) == 2
    assert type(many[1]["final_structure"]).__name__ == "Structure"
    assert [s.specie.Z for s in many[1]["final_structure"]] == list(atoms[1].numbers)
    assert many[0]["trajectory"] is None


def test_framed_and_projected_relax_batches_like_one_by_one(ckpts):
    relaxer = Relaxer.from_checkpoint(ckpts[0])
    atoms = structures()
    for rb, rs in zip(relaxer.relax(atoms, batch_size=3), [relaxer.relax(a, batch_size=1) for a in atoms]):
        np.testing.assert_allclose(rb["final_structure"].positions, rs["final_structure"].positions, atol=1e-5)
        np.testing.assert_allclose(rb["final_structure"].cell.array, rs["final_structure"].cell.array, atol=1e-5)


def test_relax_equals_model_forward_and_batching(ckpts):
    """With framing and projection off, ``relax`` is the model's own last layer."""
    from e3relax.records import collate, structure_to_data

    relaxer = Relaxer.from_checkpoint(ckpts[0], symmetry=False, canonical=False)
    atoms = structures()
    batched = relaxer.relax(atoms, batch_size=3)
    single = [relaxer.relax(a, batch_size=1) for a in atoms]
    model = relaxer.models[0]
    for a, rb, rs in zip(atoms, batched, single):
        data = collate([structure_to_data(a, GRAPHS.build(GRAPH), dtype=torch.float32)])
        with torch.no_grad():
            out = model(data)
        ref_pos, ref_cell = out.final_pos.double().numpy(), out.final_cell[0].double().numpy()
        for r in (rb, rs):
            np.testing.assert_allclose(r["final_structure"].positions, ref_pos, atol=1e-5)
            np.testing.assert_allclose(r["final_structure"].cell.array, ref_cell, atol=1e-5)
        ratio = abs(np.linalg.det(ref_cell) / np.linalg.det(a.cell.array))
        assert rb["volume_change"] == pytest.approx(ratio - 1.0, abs=1e-5)
        disp = np.linalg.norm(ref_pos - a.positions, axis=1).max()
        assert rb["max_displacement"] == pytest.approx(disp, abs=1e-5)


def test_ensemble_mean_and_uncertainty(ckpts):
    a = structures()[2]
    raw = {"symmetry": False, "canonical": False}  # the projection of the mean is not the mean of projections
    ens = Relaxer.from_checkpoint(ckpts, **raw).relax(a)
    members = [Relaxer.from_checkpoint(c, **raw).relax(a)["final_structure"].positions for c in ckpts]
    mean = np.mean(members, axis=0)
    np.testing.assert_allclose(ens["final_structure"].positions, mean, atol=1e-5)
    expected = np.sqrt(np.mean([np.sum((m - mean) ** 2, axis=1) for m in members], axis=0).mean())
    assert ens["uncertainty"] == pytest.approx(expected, rel=1e-4)
    assert Relaxer.from_checkpoint(ckpts, ensemble=False).relax(a)["uncertainty"] is None


def slab(pbc_z: bool) -> Atoms:
    a = Atoms("MoS2", scaled_positions=[[0, 0, 0.5], [1 / 3, 2 / 3, 0.58], [1 / 3, 2 / 3, 0.42]],
              cell=[[3.19, 0, 0], [-1.595, 2.7626, 0], [0, 0, 20.0]], pbc=[True, True, pbc_z])
    return a


def test_vacuum_directions():
    assert not vacuum_directions(bulk("NaCl", "rocksalt", a=5.6).positions, bulk("NaCl", "rocksalt", a=5.6).cell.array,
                                 [True] * 3).any()
    for pbc_z in (True, False):
        s = slab(pbc_z)
        assert vacuum_directions(s.positions, s.cell.array, s.pbc).tolist() == [False, False, True]
    s = slab(True)
    assert not vacuum_directions(s.positions, s.cell.array, s.pbc, threshold=None).any()
    assert not vacuum_directions(s.positions, s.cell.array, s.pbc, threshold=20.0).any()


def test_keep_vacuum_removes_out_of_plane_strain():
    cell_in = np.array([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 20.0]])
    strain = np.array([[1.1, 0.02, 0.05], [0.0, 0.95, -0.03], [0.1, 0.0, 1.3]])
    frac = np.array([[0.0, 0.0, 0.5], [0.5, 0.5, 0.55]])
    cell_pred = cell_in @ strain
    pos_pred = frac @ cell_pred
    pos, cell = keep_vacuum(pos_pred, cell_pred, cell_in, np.array([False, False, True]))
    np.testing.assert_allclose(cell[2], cell_in[2])
    np.testing.assert_allclose(cell[:2, 2], 0.0, atol=1e-12)  # periodic vectors stay in the plane
    np.testing.assert_allclose(cell[:2, :2], cell_pred[:2, :2])  # in-plane strain kept
    np.testing.assert_allclose(np.linalg.solve(cell.T, pos.T).T, frac, atol=1e-12)  # fractional coordinates kept


@pytest.mark.parametrize("pbc_z", [False, True])
def test_relax_slab_keeps_vacuum_vector(ckpts, pbc_z):
    relaxer = Relaxer.from_checkpoint(ckpts[0])
    s = slab(pbc_z)
    r = relaxer.relax(s, return_trajectory=True)
    cell = r["final_structure"].cell.array
    np.testing.assert_allclose(cell[2], s.cell.array[2], atol=1e-10)
    np.testing.assert_allclose(cell[:2, 2], 0.0, atol=1e-10)
    assert r["vacuum_directions"] == [2]
    assert list(r["final_structure"].pbc) == list(s.pbc)
    for c in r["trajectory"].cells:
        np.testing.assert_allclose(c[2], s.cell.array[2], atol=1e-10)
    raw = relaxer.relax(s, deform_vacuum=True)["final_structure"].cell.array
    assert np.abs(raw[2] - s.cell.array[2]).max() > 1e-4  # the untouched prediction does deform it


def test_flags():
    limits = SanityLimits(volume_ratio=(0.8, 1.2), uncertainty=0.1)
    assert sanity_flags(0, 1.0, 0.05, limits) == []
    assert sanity_flags(1, 1.5, 0.2, limits) == ["atoms_too_close", "volume_out_of_range", "uncertain"]
    a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.2]], cell=[5, 5, 5], pbc=True)
    assert close_contacts(a.positions, a.cell.array, a.pbc, a.numbers) == 1
    assert close_contacts(a.positions * [1, 1, 4], a.cell.array, a.pbc, a.numbers) == 0


def test_invalid_input_names_it(ckpts):
    relaxer = Relaxer.from_checkpoint(ckpts[0])
    bad = Atoms("Na2", positions=[[0, 0, 0], [0, 0, 0.0]], cell=[4, 4, 4], pbc=True)
    with pytest.raises(ValueError, match=r"^structure '#1 Na2': ") as info:
        relaxer.relax([structures()[0], bad])
    assert "'structure" not in str(info.value)
    results = list(relaxer.iter_relax([("good", structures()[0]), ("bad", bad)]))
    assert "error" not in results[0] and results[1]["id"] == "bad" and "error" in results[1]


def test_pretrained_names_and_slim_export(ckpts, tmp_path):
    import json

    from e3relax.engine.checkpoint import load_checkpoint

    slim = export_slim(ckpts[1], tmp_path / "toy_s1.pt", predict={"volume_ratio": [0.9, 1.1]})
    (tmp_path / "index.json").write_text(json.dumps({"toy": {"members": ["toy_s1.pt"], "card": "toy.md"}}))
    assert resolve_checkpoints("toy", folder=tmp_path) == [slim]
    ck = load_checkpoint(slim)
    assert ck["config"]["graph"] == GRAPH and ck["predict"]["volume_ratio"] == [0.9, 1.1]
    assert set(ck) == {"format_version", "config", "ema_model", "predict"}
    timed = load_checkpoint(export_slim(ckpts[1], tmp_path / "timed.pt", training={"time_used_s": 90.5, "steps": 7}))
    assert timed["training"] == {"time_used_s": 90.5, "steps": 7}  # loads with weights_only=True
    with pytest.raises(FileNotFoundError, match=r"checkpoint 'nope'.*shipped: toy"):
        resolve_checkpoints("nope", folder=tmp_path)
    a = structures()[0]
    np.testing.assert_allclose(Relaxer.from_checkpoint(slim).relax(a)["final_structure"].positions,
                               Relaxer.from_checkpoint(ckpts[1]).relax(a)["final_structure"].positions, atol=1e-6)


def test_pair_distances_match_ase_brute_force():
    from ase.neighborlist import neighbor_list

    from e3relax.predict.geometry import _pair_distances, min_distance

    rng = np.random.default_rng(0)
    for _ in range(10):
        n = int(rng.integers(1, 6))
        cell = np.diag(rng.uniform(2.0, 5.0, 3)) + rng.normal(0, 0.4, (3, 3))
        pbc = rng.random(3) < 0.7
        pos = rng.random((n, 3)) @ cell
        ref = neighbor_list("d", Atoms(numbers=[1] * n, positions=pos, cell=cell, pbc=pbc), 4.5)
        np.testing.assert_allclose(np.sort(_pair_distances(pos, cell, pbc, 4.5)[2]), np.sort(ref), atol=1e-9)
    cu = bulk("Cu", "fcc", a=3.6)
    assert min_distance(cu.positions, cu.cell.array, cu.pbc) == pytest.approx(3.6 / np.sqrt(2))


def test_the_prediction_frame_follows_the_training_frame(ckpts, tmp_path):
    """A checkpoint trained on pairs in their datasets' cells predicts in the user's cell by default;
    one trained in the canonical frame (or that does not say) in the canonical frame; an explicit
    choice wins, on the API and on the command line."""
    from e3relax.cli.main import main

    dataset = export_slim(ckpts[1], tmp_path / "ds.pt", predict={"frame": "dataset"})
    canon = export_slim(ckpts[1], tmp_path / "can.pt", predict={"frame": "canonical"})
    assert Relaxer.from_checkpoint(dataset).frames.canonical is False
    assert Relaxer.from_checkpoint(canon).frames.canonical is True
    assert Relaxer.from_checkpoint(ckpts[1]).frames.canonical is True  # a run checkpoint says nothing
    assert Relaxer.from_checkpoint(dataset, canonical=True).frames.canonical is True
    a = structures()[2]  # a 2x1x1 supercell: the canonical frame predicts its 1-atom primitive cell
    plain = Relaxer.from_checkpoint(dataset).relax(a)["final_structure"].positions
    np.testing.assert_array_equal(plain, Relaxer.from_checkpoint(ckpts[1], canonical=False).relax(a)["final_structure"]
                                  .positions)
    import argparse

    from e3relax.cli.predict import add_frame_arguments, frame_options

    parser = argparse.ArgumentParser()
    add_frame_arguments(parser)
    for flag, want in (([], None), (["--canonical-cell"], True), (["--no-canonical-cell"], False)):
        assert frame_options(parser.parse_args(flag))["canonical"] is want
    with pytest.raises(SystemExit):
        parser.parse_args(["--canonical-cell", "--no-canonical-cell"])
    a.write(tmp_path / "cu.cif")
    assert main(["predict", str(tmp_path / "cu.cif"), "--checkpoint", str(dataset), "--out", str(tmp_path / "o"),
                 "--no-progress", "--canonical-cell"]) == 0
