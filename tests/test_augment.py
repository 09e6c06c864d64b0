"""Training-time augmentation: generated inputs, same target, fixed by (seed, draw), off by default."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import test_engine_toy as toy
from e3relax import keys
from e3relax.datasets.reader import LmdbDataset
from e3relax.engine.augment import AugmentedPairs, augmented_input
from e3relax.engine.data import StreamBatchSampler, collate
from e3relax.errors import InputError

GRAPH = {"name": "periodic_multi_edge"}


def _pair(seed: int = 0):
    rng = np.random.default_rng(seed)
    cell_u = np.eye(3) * 4.0 + 0.2 * rng.random((3, 3))
    pos_u = rng.random((4, 3)) @ cell_u
    return pos_u, cell_u, pos_u + 0.3 * rng.standard_normal((4, 3)), cell_u * 0.95


def test_denoise_and_interpolate_inputs():
    pos_u, cell_u, pos_r, cell_r = _pair()
    rng = np.random.default_rng(1)
    pos, cell = augmented_input(pos_u, cell_u, pos_r, cell_r, "denoise", 0.0, 0.0, rng)
    np.testing.assert_allclose(pos, pos_r, atol=1e-12)  # no strain, no rattle: the relaxed structure itself
    np.testing.assert_allclose(cell, cell_r, atol=1e-12)
    pos, cell = augmented_input(pos_u, cell_u, pos_r, cell_r, "denoise", 0.05, 0.1, rng)
    strain = np.linalg.solve(cell_r, cell) - np.eye(3)
    assert np.allclose(strain, strain.T) and np.abs(strain).max() <= 0.05 and np.abs(strain).max() > 0
    frac_shift = pos @ np.linalg.inv(cell) - pos_r @ np.linalg.inv(cell_r)
    assert 0 < np.abs(frac_shift @ cell).max() < 0.6  # rattled by ~0.1 A
    pos, cell = augmented_input(pos_u, cell_u, pos_r, cell_r, "interpolate", 0.05, 0.1, rng)
    lam = (cell - cell_u)[0, 0] / (cell_r - cell_u)[0, 0]
    assert 0 <= lam <= 1
    np.testing.assert_allclose(pos, pos_u + lam * (pos_r - pos_u), atol=1e-12)
    np.testing.assert_allclose(cell, cell_u + lam * (cell_r - cell_u), atol=1e-12)


def _dataset(tmp_path, n: int = 6):
    return LmdbDataset(toy.write_lmdb(tmp_path / "pairs.lmdb", range(n)), dtype=torch.float64)


def test_generated_draws_keep_the_target_and_are_fixed_by_seed_and_draw(tmp_path):
    base = _dataset(tmp_path)
    aug = AugmentedPairs(base, {"share": 1.0, "kind": "denoise", "strain": 0.03, "rattle": 0.05}, GRAPH, seed=4)
    original = base[2]
    a, b, c = aug[(2, 17)], aug[(2, 17)], aug[(2, 18)]
    assert set(a.keys()) == set(original.keys())
    torch.testing.assert_close(a[keys.POS_U], b[keys.POS_U])  # same (seed, draw): the same input
    assert not torch.allclose(a[keys.POS_U], c[keys.POS_U])
    assert not torch.allclose(a[keys.POS_U], original[keys.POS_U])
    torch.testing.assert_close(a[keys.CELL_R], original[keys.CELL_R], atol=1e-9, rtol=0)  # same target
    frac = lambda d, p, c: p @ torch.linalg.inv(d[c][0])
    d = frac(a, a[keys.POS_R], keys.CELL_R) - frac(original, original[keys.POS_R], keys.CELL_R)
    assert torch.allclose(d, torch.round(d), atol=1e-9)  # the same relaxed atoms (up to a lattice image)
    assert a[keys.EDGE_INDEX].shape[1] > 0  # a graph built on the generated input
    collate([a, original])  # generated and plain records batch together
    torch.testing.assert_close(aug[2][keys.POS_U], original[keys.POS_U])  # a plain index: the pair itself
    none = AugmentedPairs(base, {"share": 0.0}, GRAPH, seed=4)
    torch.testing.assert_close(none[(2, 17)][keys.POS_U], original[keys.POS_U])
    half = AugmentedPairs(base, {"share": 0.5, "kind": "both"}, GRAPH, seed=4)
    changed = [not torch.equal(half[(k % 6, k)][keys.POS_U], base[k % 6][keys.POS_U]) for k in range(200)]
    assert 0.4 < np.mean(changed) < 0.6


def test_bad_settings_name_the_key(tmp_path):
    base = _dataset(tmp_path)
    for bad, key in (({"share": 1.5}, "share"), ({"share": 0.5, "kind": "shake"}, "kind"),
                     ({"share": 0.5, "rattle": -1}, "rattle")):
        with pytest.raises(InputError, match=key):
            AugmentedPairs(base, bad, GRAPH, seed=0)


def test_sampler_hands_the_draw_and_training_resumes_exactly(tmp_path):
    from e3relax.engine.checkpoint import load_checkpoint
    from e3relax.engine.trainer import train

    s = StreamBatchSampler(6, 4, seed=1, with_draw=True)
    assert [i for i, _ in s.batch(3)] == StreamBatchSampler(6, 4, seed=1).batch(3)
    assert [d for _, d in s.batch(3)] == [12, 13, 14, 15]
    path = toy.write_lmdb(tmp_path / "pairs.lmdb", range(8))
    common = {"log": {"tensorboard": False}, "dtype": "float64",
              "data": {"train": str(path), "val": str(path), "batch_size": 4,
                       "augment": {"share": 0.5, "kind": "both"}}}
    straight = toy.toy_config(tmp_path / "a", schedule={"epoch_length": 4, "max_epochs": 2}, **common)
    train(straight)
    first = toy.toy_config(tmp_path / "b", schedule={"epoch_length": 4, "max_epochs": 1}, **common)
    train(first)
    second = toy.toy_config(tmp_path / "b", schedule={"epoch_length": 4, "max_epochs": 2}, **common)
    train(second, resume=True)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
