"""Metrics on hand-computed cases: paper metrics, lattice errors, pooling, matcher and spglib."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from e3relax import keys, metrics
from e3relax.metrics import (
    LOOSE,
    STRICT,
    MetricAccumulator,
    lattice_parameters,
    match_metrics,
    pooled_coord_mae,
    space_group_number,
    structure_metrics,
    summarize,
)

D = torch.float64


def two_structures():
    """Structure 0: 1 atom, cubic 2 -> 2.1. Structure 1: 3 atoms, cubic 3 -> gamma 80 degrees."""
    ref_pos = torch.zeros(4, 3, dtype=D)
    pred_pos = ref_pos.clone()
    pred_pos[0] = torch.tensor([0.3, -0.3, 0.3])        # structure 0: MAE 0.3
    pred_pos[1] = torch.tensor([0.6, 0.0, 0.0])         # structure 1: MAE 0.6 / 9
    ref_cell = torch.stack([2.0 * torch.eye(3, dtype=D), 3.0 * torch.eye(3, dtype=D)])
    g = math.radians(80.0)
    mono = torch.tensor([[3.0, 0, 0], [3 * math.cos(g), 3 * math.sin(g), 0], [0, 0, 3.0]], dtype=D)
    pred_cell = torch.stack([2.1 * torch.eye(3, dtype=D), mono])
    batch = torch.tensor([0, 1, 1, 1])
    return pred_pos, pred_cell, ref_pos, ref_cell, batch


def test_paper_metrics_hand_computed():
    m = structure_metrics(*two_structures())
    torch.testing.assert_close(m["mae_pos"], torch.tensor([0.3, 0.6 / 9], dtype=D))
    torch.testing.assert_close(m["shape_dev"], torch.tensor([0.41 * math.sqrt(3), math.sqrt(2) * 9 * math.cos(
        math.radians(80))], dtype=D))
    torch.testing.assert_close(m["mae_vol"], torch.tensor([2.1**3 - 8, 27 - 27 * math.sin(math.radians(80))],
                                                          dtype=D))
    torch.testing.assert_close(m["a_err"], torch.tensor([0.1, 0.0], dtype=D))
    torch.testing.assert_close(m["gamma_err"], torch.tensor([0.0, 10.0], dtype=D))
    torch.testing.assert_close(m["alpha_err"], torch.zeros(2, dtype=D), atol=1e-12, rtol=0)
    torch.testing.assert_close(m["angle_mae"], torch.tensor([0.0, 10.0 / 3], dtype=D))
    torch.testing.assert_close(m["abc_mae"], torch.tensor([0.1, 0.0], dtype=D))


def test_per_structure_mean_differs_from_pooled():
    pred_pos, pred_cell, ref_pos, ref_cell, batch = two_structures()
    m = structure_metrics(pred_pos, pred_cell, ref_pos, ref_cell, batch)
    assert summarize(m)["mae_pos"] == pytest.approx((0.3 + 0.6 / 9) / 2)
    assert float(pooled_coord_mae(pred_pos, ref_pos)) == pytest.approx((0.9 + 0.6) / 12)
    mask = torch.tensor([False, True, False, False])
    masked = structure_metrics(pred_pos, pred_cell, ref_pos, ref_cell, batch, atom_mask=mask)["mae_pos_masked"]
    assert math.isnan(float(masked[0])) and float(masked[1]) == pytest.approx(0.2)


def test_volume_uses_signed_determinants():
    ref = torch.eye(3, dtype=D)[None] * 2.0
    left = ref[:, [1, 0, 2]]  # same lattice, left-handed
    m = structure_metrics(torch.zeros(1, 3, dtype=D), left, torch.zeros(1, 3, dtype=D), ref,
                          torch.zeros(1, dtype=torch.long))
    assert float(m["mae_vol"]) == pytest.approx(16.0)
    assert float(m["shape_dev"]) == pytest.approx(0.0)  # |a| = |b|: swapping them keeps the Gram matrix


def test_lattice_parameters_hexagonal():
    hexa = torch.tensor([[[2.0, 0, 0], [-1.0, math.sqrt(3), 0], [0, 0, 5.0]]], dtype=D)
    lengths, angles = lattice_parameters(hexa)
    torch.testing.assert_close(lengths, torch.tensor([[2.0, 2.0, 5.0]], dtype=D))
    torch.testing.assert_close(angles, torch.tensor([[90.0, 90.0, 120.0]], dtype=D))


def _batch():
    from e3relax.records import collate, record_to_data

    recs = []
    for sid, (n, a) in {"x": (1, 2.0), "y": (2, 3.0)}.items():
        recs.append({keys.ID: sid, keys.POS_U: np.full((n, 3), 0.5), keys.CELL_U: a * np.eye(3),
                     keys.POS_R: np.zeros((n, 3)), keys.CELL_R: (a + 0.5) * np.eye(3), keys.Z: np.ones(n, int),
                     keys.EDGE_INDEX: np.zeros((2, 0), int), keys.CELL_OFFSETS: np.zeros((0, 3), int)})
    return collate([record_to_data(r, dtype=D) for r in recs])


def test_dummy_metrics_and_accumulator():
    batch = _batch()
    dummy = metrics.dummy_metrics(batch)
    torch.testing.assert_close(dummy["mae_pos"], torch.tensor([0.5, 0.5], dtype=D))
    torch.testing.assert_close(dummy["mae_vol"], torch.tensor([2.5**3 - 8, 3.5**3 - 27], dtype=D))
    acc = MetricAccumulator()
    acc.update(batch[keys.POS_U], batch[keys.CELL_U], batch)
    pred = batch[keys.POS_R].clone()
    pred[0] += 1.0  # structure x off by 1 in every component
    acc.update(pred, batch[keys.CELL_R], batch)
    out = acc.compute()
    assert out["mae_pos"] == pytest.approx((0.5 + 0.5 + 1.0 + 0.0) / 4)
    assert out["pooled_mae_pos"] == pytest.approx((0.5 * 9 + 1.0 * 3) / 18)
    assert out["shape_dev"] == pytest.approx(float(dummy["shape_dev"].sum()) / 4)
    assert acc.per_structure()["mae_vol"].shape == (4,)
    acc.reset()
    assert math.isnan(acc.compute()["pooled_mae_pos"])


def test_summarize_ignores_nan_and_turns_bools_into_rates():
    out = summarize({"rmsd": [0.1, math.nan, 0.3], "match": np.array([True, False, False, True]),
                     "none": [math.nan]})
    assert out["rmsd"] == pytest.approx(0.2) and out["match"] == 0.5 and math.isnan(out["none"])


def test_space_group_numbers():
    assert space_group_number(bulk("NaCl", "rocksalt", a=5.6)) == 225
    assert space_group_number(bulk("Si", "diamond", a=5.43)) == 227
    distorted = bulk("Cu", "fcc", a=3.6, cubic=True)
    distorted.positions[0] += [0.05, 0.0, 0.0]
    assert space_group_number(distorted, symprec=0.1) == 225
    assert space_group_number(distorted, symprec=0.01) != 225


def test_match_metrics_strict_versus_loose():
    ref = bulk("NaCl", "rocksalt", a=5.6)  # (V/N)^(1/3) = 2.8 A: strict stol ~0.14 A, loose ~0.84 A
    moved = ref.copy()
    moved.positions[1] += [0.4, 0.0, 0.0]
    strained = ref.copy()
    strained.set_cell(ref.cell.array * 1.1, scale_atoms=True)  # 10% lengths: beyond strict ltol
    out = match_metrics([ref, moved, strained], [ref, ref, ref])
    assert out["match_strict"].tolist() == [True, False, False]
    assert out["match_loose"].tolist() == [True, True, True]
    assert out["rmsd_strict"][0] == pytest.approx(0.0, abs=1e-8) and np.isnan(out["rmsd_strict"][1])
    assert 0.0 < out["rmsd_loose"][1] < 0.3
    assert out["spg_ref"].tolist() == [225] * 3 and out["spg_match"].tolist() == [True, False, True]
    assert STRICT.ltol < LOOSE.ltol and not LOOSE.scale
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        match_metrics([ref, ref], [ref])


def test_match_accepts_pymatgen_structures():
    from e3relax.structures import to_structure

    a = Atoms("Si2", scaled_positions=[[0, 0, 0], [0.25, 0.25, 0.25]],
              cell=[[0, 2.7, 2.7], [2.7, 0, 2.7], [2.7, 2.7, 0]], pbc=True)
    out = match_metrics([to_structure(a)], [a])
    assert out["match_strict"].tolist() == [True] and out["spg_pred"].tolist() == [227]


def test_structures_from_batch_round_trip():
    batch = _batch()
    pos = batch[keys.POS_R].clone()
    pos[2] = 1.75  # structure y: body-centred H2 in a 3.5 A cube
    atoms = metrics.structures_from_batch(pos, batch[keys.CELL_R], batch[keys.Z], batch[keys.BATCH], batch[keys.PBC])
    assert [len(a) for a in atoms] == [1, 2]
    np.testing.assert_allclose(atoms[1].cell.array, 3.5 * np.eye(3))
    np.testing.assert_allclose(atoms[1].positions, [[0, 0, 0], [1.75, 1.75, 1.75]])
    out = match_metrics(atoms, atoms)
    assert out["match_strict"].all() and out["spg_ref"].tolist() == [221, 229]
