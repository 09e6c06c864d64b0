"""Training pairs in the frame ``predict`` uses (``e3relax data convert --canonical-frame``).

The unrelaxed input goes into its canonical frame (primitive cell, reduced basis, atom 0 at the
origin) and the relaxed label is mapped the same way, so a model trains on the inputs prediction
will give it. The same pair written in another basis, with another origin or as a supercell must
give the same record, and mapping a label into the frame and back must return it.
"""
from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from data_fixtures import graph_spec, write_poscar_pairs
from e3relax import keys
from e3relax.datasets.convert import convert
from e3relax.datasets.reader import LmdbDataset
from e3relax.predict.canonical import CanonicalFrame
from e3relax.records import make_record
from e3relax.registry import GRAPHS, IMPORTERS

GRAPH = GRAPHS.build({"name": "periodic_multi_edge", "cutoff": 5.0})
SYMPREC = 0.01


def pair(seed: int = 0) -> tuple[Atoms, Atoms]:
    """A skewed 4-atom P1 input and a relaxed label (strained, atoms moved)."""
    rng = np.random.default_rng(seed)
    cell = np.array([[4.2, 0.3, 0.1], [0.9, 4.6, 0.2], [0.4, 0.7, 5.1]])
    u = Atoms(numbers=[3, 8, 14, 26], scaled_positions=rng.random((4, 3)), cell=cell, pbc=True)
    r = u.copy()
    r.set_cell(cell @ (np.eye(3) + rng.uniform(-0.04, 0.04, (3, 3))), scale_atoms=True)
    r.positions += rng.normal(0, 0.08, (4, 3))
    return u, r


def rebased(a: Atoms, m: np.ndarray, origin: np.ndarray) -> Atoms:
    """The same crystal with cell ``m @ cell`` (unimodular) and every atom moved by the fractional
    vector ``origin`` (atoms ride the cell: a relaxed label moves by ``origin`` in its own cell)."""
    b = a.copy()
    b.set_cell(m @ a.cell.array, scale_atoms=False)
    b.positions = a.positions + origin @ a.cell.array
    return b


def fields(rec: dict) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(rec[k], dtype=float) for k in (keys.POS_U, keys.CELL_U, keys.POS_R, keys.CELL_R))


def test_label_into_the_frame_and_back_is_the_label():
    u, r = pair()
    frame = CanonicalFrame.from_structure(u.positions, u.cell.array, u.numbers, u.pbc, SYMPREC)
    pos, cell = frame.to_user(*frame.to_frame(r.positions, r.cell.array))
    assert np.abs(pos - r.positions).max() < 1e-10 and np.abs(cell - r.cell.array).max() < 1e-10


@pytest.mark.parametrize("seed", range(3))
def test_another_basis_or_origin_gives_the_same_record(seed):
    u, r = pair(seed)
    m = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1]])  # a' = a + b, c' = c + a
    shift = np.array([0.07, -0.3, 0.11])  # fractional
    ref = fields(make_record(u, r, "a", GRAPH, canonical=SYMPREC)[0])
    got = fields(make_record(rebased(u, m, shift), rebased(r, m, shift), "b", GRAPH, canonical=SYMPREC)[0])
    for a, b in zip(ref, got):
        assert np.abs(a - b).max() < 1e-8
    own = fields(make_record(u, r, "a", GRAPH)[0])  # without the option: the user's basis
    assert np.abs(own[1] - ref[1]).max() > 0.1


def test_a_supercell_pair_becomes_its_primitive_pair():
    prim_u = bulk("NaCl", "rocksalt", 5.64)
    prim_r = prim_u.copy()
    prim_r.set_cell(prim_u.cell.array * 1.03, scale_atoms=True)
    sup_u, sup_r = prim_u * (2, 2, 2), prim_r * (2, 2, 2)
    rec_sup = make_record(sup_u, sup_r, "sup", GRAPH, canonical=SYMPREC)[0]
    rec_prim = make_record(prim_u, prim_r, "prim", GRAPH, canonical=SYMPREC)[0]
    assert len(rec_sup[keys.Z]) == 2
    # the same primitive pair, up to a choice among symmetry-equivalent reduced bases of the fcc
    # lattice: equal metrics and fractional coordinates
    for rec_a, rec_b in ((rec_sup, rec_prim),):
        for pos_key, cell_key in ((keys.POS_U, keys.CELL_U), (keys.POS_R, keys.CELL_R)):
            ca, cb = (np.asarray(r[cell_key], dtype=float).reshape(3, 3) for r in (rec_a, rec_b))
            assert np.abs(ca @ ca.T - cb @ cb.T).max() < 1e-8
            fa, fb = (np.linalg.solve(c.T, np.asarray(r[pos_key], dtype=float).T).T
                      for c, r in ((ca, rec_a), (cb, rec_b)))
            assert np.abs(fa - fb - np.round(fa - fb)).max() < 1e-8
    assert np.abs(np.linalg.det(rec_sup[keys.CELL_R]) / np.linalg.det(rec_sup[keys.CELL_U]) - 1.03 ** 3) < 1e-9


def test_convert_records_the_option_and_writes_canonical_pairs(tmp_path):
    write_poscar_pairs(tmp_path / "src", as_tarballs=False)
    importer = IMPORTERS.build({"name": "poscar_pairs", "src": tmp_path / "src"})
    report = convert(importer, tmp_path / "out", layout="poscar_pairs", graph=graph_spec(), progress=False,
                     canonical_frame=SYMPREC)
    plain = convert(importer, tmp_path / "plain", layout="poscar_pairs", graph=graph_spec(), progress=False)
    assert report["counts"]["converted"] == plain["counts"]["converted"] > 0
    assert LmdbDataset(tmp_path / "out" / "train.lmdb").metadata["source"]["canonical_frame"] == SYMPREC
    moved = 0
    for split in report["counts"]["splits"]:
        can, own = LmdbDataset(tmp_path / "out" / f"{split}.lmdb"), LmdbDataset(tmp_path / "plain" / f"{split}.lmdb")
        for k in range(len(can)):
            a, b = can.record(k), own.record(k)
            assert a[keys.ID] == b[keys.ID]
            # the same volume change, whatever the frame
            ratio = [np.linalg.det(np.asarray(x[keys.CELL_R])) / np.linalg.det(np.asarray(x[keys.CELL_U])) for x in (a, b)]
            assert ratio[0] == pytest.approx(ratio[1], rel=1e-6)
            moved += int(np.abs(np.asarray(a[keys.CELL_U]) - np.asarray(b[keys.CELL_U])).max() > 1e-6)
    assert moved > 0


def test_runs_record_their_training_frame_and_predict_in_it(tmp_path):
    """The frame of the training pairs is read from the LMDB (all parts canonical, or not), recorded
    in the run's checkpoints, and is the frame the run's checkpoint predicts in by default."""
    from torch.utils.data import ConcatDataset, Subset

    from e3relax.engine.checkpoint import load_checkpoint
    from e3relax.engine.config import resolve_config
    from e3relax.engine.data import training_frame
    from e3relax.engine.trainer import train
    from e3relax.predict import Relaxer
    from e3relax.registry import MODELS

    write_poscar_pairs(tmp_path / "src", as_tarballs=False)
    importer = IMPORTERS.build({"name": "poscar_pairs", "src": tmp_path / "src"})
    for name, option in (("can", SYMPREC), ("plain", None)):
        convert(importer, tmp_path / name, layout="poscar_pairs", graph=graph_spec(), progress=False,
                canonical_frame=option)
    can, plain = (LmdbDataset(tmp_path / name / "train.lmdb") for name in ("can", "plain"))
    assert training_frame(can) == "canonical" and training_frame(plain) == "dataset"
    assert training_frame(Subset(can, [0])) == "canonical"
    assert training_frame(ConcatDataset([can, can])) == "canonical"
    assert training_frame(ConcatDataset([can, plain])) == "dataset"
    for name, want in (("can", True), ("plain", False)):
        config = resolve_config({
            "run_dir": str(tmp_path / f"run_{name}"), "device": "cpu", "seed": 0,
            "model": {"name": "e3relax", **MODELS.get("e3relax").test_config()},
            "data": {"train": str(tmp_path / name / "train.lmdb"), "val": str(tmp_path / name / "train.lmdb"),
                     "batch_size": 2},
            "schedule": {"epoch_length": 1, "max_epochs": 1}, "log": {"tensorboard": False, "progress_bar": False},
        })
        train(config)
        best = tmp_path / f"run_{name}" / "checkpoints" / "best.pt"
        assert load_checkpoint(best)["train_frame"] == ("canonical" if want else "dataset")
        assert Relaxer.from_checkpoint(best).frames.canonical is want
        assert Relaxer.from_checkpoint(best, canonical=not want).frames.canonical is (not want)
