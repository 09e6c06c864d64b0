"""The projection in torch: one implementation for prediction and training, differentiable.

``project_batch`` must equal the one-structure projection of prediction, leave P1 structures
bit-identical, differentiate through the repeated eigenvalues of symmetric cells, and, switched on
with ``symmetry.train``, give every emitted layer of a training batch the input's space group.
"""
from __future__ import annotations

import numpy as np
import pytest
import spglib
import torch
from ase import Atoms
from ase.build import bulk

from e3relax import keys
from e3relax.engine.symmetry import TrainingSymmetry
from e3relax.registry import GRAPHS
from e3relax.predict.symmetry import BatchOps, find_operations, project, project_batch, spd_sqrt
from e3relax.records import collate, make_record, record_to_data
from e3relax.types import RelaxOutput

SYMPREC = 0.01
GRAPH = GRAPHS.build({"name": "periodic_multi_edge", "cutoff": 5.0})


def eigh_sqrt(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(a)
    return (vecs * np.sqrt(vals)) @ vecs.T


@pytest.mark.parametrize("seed", range(4))
def test_newton_schulz_sqrt_equals_the_eigendecomposition(seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    for vals in (rng.uniform(0.5, 2.0, 3), np.array([1.3, 1.3, 0.7]), np.ones(3), np.array([40.0, 1.0, 0.05])):
        a = (q * vals) @ q.T
        got = spd_sqrt(torch.tensor(a)).numpy()
        assert np.abs(got - eigh_sqrt(a)).max() < 1e-12 * max(1.0, np.sqrt(vals.max()))


def test_sqrt_has_a_finite_exact_gradient_at_repeated_eigenvalues():
    a = torch.diag(torch.tensor([1.2, 1.2, 1.2], dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: spd_sqrt(0.5 * (m + m.T)), (a,))
    # d sqrt(a) / d a at a = c I is I / (2 sqrt(c)) per entry of a symmetric perturbation
    (grad,) = torch.autograd.grad(spd_sqrt(a).trace(), a)
    assert torch.allclose(grad, torch.eye(3, dtype=torch.float64) / (2 * 1.2 ** 0.5))


def crystals() -> list[Atoms]:
    rng = np.random.default_rng(0)
    p1 = Atoms(numbers=[3, 8, 14, 26], scaled_positions=rng.random((4, 3)),
               cell=np.diag([4.1, 4.6, 5.0]) + rng.uniform(-0.4, 0.4, (3, 3)), pbc=True)
    return [bulk("Si", "diamond", 5.43, cubic=True), p1, bulk("NaCl", "rocksalt", 5.64),
            bulk("ZnO", "wurtzite", a=3.25, c=5.21)]


def predicted(atoms: Atoms, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A symmetry-breaking 'prediction': the input strained and rattled at random."""
    rng = np.random.default_rng(seed)
    cell = atoms.cell.array @ (np.eye(3) + rng.uniform(-0.06, 0.06, (3, 3)))
    pos = atoms.get_scaled_positions() @ cell + rng.normal(0, 0.1, (len(atoms), 3))
    return pos, cell


def test_batch_projection_equals_the_one_structure_projection_and_keeps_p1_as_is():
    atoms = crystals()
    ops = [find_operations(a.positions, a.cell.array, a.numbers, SYMPREC) for a in atoms]
    assert [o.trivial for o in ops] == [False, True, False, False]
    preds = [predicted(a, i) for i, a in enumerate(atoms)]
    t = lambda xs: torch.tensor(np.concatenate(xs))  # noqa: E731
    batch = torch.repeat_interleave(torch.arange(len(atoms)), torch.tensor([len(a) for a in atoms]))
    pos, cell = project_batch(BatchOps.from_ops(ops), t([a.positions for a in atoms]),
                              t([a.cell.array[None] for a in atoms]), t([p for p, _ in preds]),
                              t([c[None] for _, c in preds]), batch)
    for i, (a, o, (p, c)) in enumerate(zip(atoms, ops, preds)):
        want_p, want_c = project(o, a.positions, a.cell.array, p, c)
        got_p, got_c = pos[batch == i].numpy(), cell[i].numpy()
        if o.trivial:  # returned exactly, not recomputed
            assert np.array_equal(got_p, p) and np.array_equal(got_c, c)
        assert np.abs(got_p - want_p).max() < 1e-12 and np.abs(got_c - want_c).max() < 1e-12
        sg_in = spglib.get_symmetry_dataset((a.cell.array, a.get_scaled_positions(), a.numbers), symprec=SYMPREC)
        frac = np.linalg.solve(got_c.T, got_p.T).T
        sg_out = spglib.get_symmetry_dataset((got_c, frac, a.numbers), symprec=SYMPREC)
        assert sg_out.number == sg_in.number, (i, sg_in.international, sg_out.international)


def records(n_rattle: float = 0.05):
    """Training records whose labels break the input's symmetry (strained and rattled)."""
    out = []
    for i, a in enumerate(crystals()):
        pos, cell = predicted(a, 10 + i)
        relaxed = Atoms(numbers=a.numbers, positions=pos, cell=cell, pbc=True)
        rec, _ = make_record(a, relaxed, f"s{i}", GRAPH)
        out.append(record_to_data(rec, dtype=torch.float64))
    return out


def test_training_projection_gives_every_layer_the_input_space_group_and_gradients():
    batch = collate(records())
    sym = TrainingSymmetry(SYMPREC)
    weight = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    raw = [batch[keys.POS_R] + weight * 0.1 * torch.randn(batch[keys.POS_R].shape, generator=g, dtype=torch.float64)
           for _ in range(2)]
    cells = [batch[keys.CELL_R].reshape(-1, 3, 3) * (1 + 0.02 * weight * k) for k in range(2)]
    out = sym(RelaxOutput(pos=raw, cell=cells), batch)
    assert sym.found == 4
    sym(RelaxOutput(pos=raw, cell=cells), batch)
    assert sym.found == 4  # operations are found once per structure
    z, ptr = batch[keys.Z].numpy(), batch.ptr.numpy()
    for t in range(2):
        for i, (a, b) in enumerate(zip(ptr[:-1], ptr[1:])):
            cell_u = batch[keys.CELL_U].reshape(-1, 3, 3)[i].numpy()
            frac_u = np.linalg.solve(cell_u.T, batch[keys.POS_U][a:b].numpy().T).T
            want = spglib.get_symmetry_dataset((cell_u, frac_u, z[a:b]), symprec=SYMPREC).number
            c = out.cell[t][i].detach().numpy()
            frac = np.linalg.solve(c.T, out.pos[t][a:b].detach().numpy().T).T
            assert spglib.get_symmetry_dataset((c, frac, z[a:b]), symprec=SYMPREC).number == want
    loss = sum(p.square().sum() for p in out.pos) + sum(c.square().sum() for c in out.cell)
    (grad,) = torch.autograd.grad(loss, weight)
    assert torch.isfinite(grad) and grad != 0


SEEN: list = []


def keep_validation_outputs(trainer, evaluator, context):
    """Hook: keep what validation scored (predicted positions and cells with their batch)."""
    from ignite.engine import Events

    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: SEEN.append(e.state.output[:3]))


def space_groups(pos, cell, batch) -> list[int]:
    z, ptr, cell = batch[keys.Z].numpy(), batch.ptr.numpy(), cell.reshape(-1, 3, 3).numpy()
    out = []
    for i, (a, b) in enumerate(zip(ptr[:-1], ptr[1:])):
        frac = np.linalg.solve(cell[i].T, pos[a:b].numpy().T).T
        out.append(spglib.get_symmetry_dataset((cell[i], frac, z[a:b]), symprec=SYMPREC).number)
    return out


@pytest.mark.parametrize("on", [True, False])
def test_symmetry_train_validates_the_projected_output(tmp_path, on):
    from e3relax.engine.config import merge, resolve_config
    from e3relax.engine.trainer import train
    from e3relax.registry import MODELS

    data = records()
    cfg = {"run_dir": str(tmp_path), "device": "cpu", "dtype": "float64", "seed": 0,
           "model": {"name": "e3relax", **MODELS.get("e3relax").test_config()},
           "data": {"batch_size": 2}, "optim": {"lr": 1e-3}, "hooks": ["test_symmetry_train.keep_validation_outputs"],
           "schedule": {"epoch_length": 2, "max_epochs": 2}, "symmetry": {"train": on},
           "log": {"progress_bar": False, "tensorboard": False, "figures": False}}
    SEEN.clear()
    out = train(resolve_config(merge(cfg, {}, strict=False)), datasets={"train": data, "val": data})
    assert out["iteration"] == 4 and out["skipped_nonfinite_steps"] == 0
    assert np.isfinite(out["best_val_pooled_mae_pos"]) and SEEN
    want = space_groups(*(collate(data)[k] for k in (keys.POS_U, keys.CELL_U)), collate(data))
    got = [n for pos, cell, batch in SEEN for n in space_groups(pos, cell, batch)]
    if on:  # every validated prediction has its input's space group
        assert got == want * (len(got) // len(want))
    else:  # the bare model (labels break symmetry) does not keep it
        assert got != want * (len(got) // len(want))


def test_bad_symprec_of_training_names_the_key():
    from e3relax.errors import InputError

    with pytest.raises(InputError, match="symmetry.symprec"):
        TrainingSymmetry(-1.0)
