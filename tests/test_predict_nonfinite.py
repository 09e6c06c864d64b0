"""A model that diverges on some structures: the Relaxer returns no NaN, reports those structures,
and a comparison scores them as the unrelaxed input and counts them."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase.build import bulk

import e3relax.models  # noqa: F401 - registers the models
from e3relax import keys
from e3relax.benchmark import tables
from e3relax.engine.evaluation import evaluate
from e3relax.metrics import MAE_POS, MAE_VOL
from e3relax.model_base import RelaxModel, RelaxOutput
from e3relax.predict import Relaxer
from e3relax.predict.geometry import restore_nonfinite
from e3relax.registry import GRAPHS

GRAPH = {"name": "periodic_multi_edge", "cutoff": 5.0, "max_neighbors": 12}


class NaNOnCopper(RelaxModel):
    """Moves every atom by 0.1 A along x (two layers) and returns NaN positions in the last layer for
    any structure holding copper: a model that diverged on those structures."""

    def forward(self, data) -> RelaxOutput:
        pos_u, cell_u = data[keys.POS_U], data[keys.CELL_U].reshape(-1, 3, 3)
        shift = torch.zeros_like(pos_u)
        shift[:, 0] = 0.1
        has_cu = torch.zeros(cell_u.shape[0], dtype=torch.long).index_add_(
            0, data[keys.BATCH], (data[keys.Z] == 29).long()) > 0
        last = torch.where(has_cu[data[keys.BATCH]][:, None], torch.full_like(pos_u, math.nan), pos_u + shift)
        return RelaxOutput(pos=[pos_u + shift / 2, last], cell=[cell_u, cell_u])


def _crystals():
    return [bulk("NaCl", "rocksalt", a=5.6), bulk("Cu", "fcc", a=3.6, cubic=True), bulk("Si", "diamond", a=5.43)]


@pytest.fixture(scope="module")
def records():
    from e3relax.records import make_record, record_to_data

    out = []
    for i, a in enumerate(_crystals()):
        u = a.copy()
        u.rattle(0.05, seed=i)
        rec, _ = make_record(u, a, f"s{i}", GRAPHS.build(GRAPH))
        out.append(record_to_data(rec, torch.float64))
    return out


def test_restore_puts_the_input_back_in_every_layer():
    pos_in = torch.arange(12, dtype=torch.float64).reshape(4, 3)
    cell_in = torch.eye(3, dtype=torch.float64).expand(2, 3, 3) * 4.0
    batch = torch.tensor([0, 0, 1, 1])
    pos = [pos_in + 1.0, pos_in + 2.0]
    cell = [cell_in + 0.5, cell_in.clone()]
    cell[0][1, 2, 2] = math.inf  # structure 1 is bad in the first layer only
    got_pos, got_cell, bad = restore_nonfinite(pos, cell, pos_in, cell_in, batch)
    assert bad.tolist() == [False, True]
    for t, shift in enumerate((1.0, 2.0)):
        assert torch.equal(got_pos[t][:2], pos_in[:2] + shift) and torch.equal(got_pos[t][2:], pos_in[2:])
        assert torch.equal(got_cell[t][1], cell_in[1])
    assert torch.equal(got_cell[0][0], cell_in[0] + 0.5)


def test_evaluation_scores_a_diverged_structure_as_its_input_and_counts_it(records):
    relaxer = Relaxer([NaNOnCopper()], GRAPH, dtype=torch.float64, symmetry=False, canonical=False)
    table = evaluate(relaxer, records, batch_size=3, progress=None, keep_structures=True)
    assert table.extra["non_finite"].tolist() == [0.0, 1.0, 0.0]
    assert np.isfinite(table.structures[1].positions).all()
    assert np.allclose(table.structures[1].positions, table.inputs[1].positions)
    for name in (MAE_POS, MAE_VOL):  # the Cu row is the Dummy's, so no mean over structures skips it
        assert table.metrics[name][1] == pytest.approx(table.dummy[name][1], rel=1e-12)
    assert np.allclose(table.structures[0].positions, table.inputs[0].positions + [0.1, 0.0, 0.0])
    assert math.isfinite(table.summary[MAE_POS])


def test_relax_reports_a_diverged_structure_and_keeps_the_others():
    relaxer = Relaxer([NaNOnCopper()], GRAPH, dtype=torch.float64)
    results = list(relaxer.iter_relax([(f"x{i}", a) for i, a in enumerate(_crystals())]))
    assert [r["id"] for r in results] == ["x0", "x1", "x2"]
    assert "error" not in results[0] and "error" not in results[2]
    assert results[1]["error"].startswith("structure 'x1': the model's prediction is not finite")
    assert np.isfinite(results[0]["final_structure"].positions).all()
    with pytest.raises(ValueError, match=r"structure '#0 Cu4': the model's prediction is not finite"):
        relaxer.relax(_crystals()[1])


def test_tables_name_skipped_steps_and_diverged_test_structures():
    budget = {"steps": 10000, "cpu_s": 2700.0, "wall_s": None, "patience": 10}
    assert tables.stopped_by({"steps": 400, "wall_budget_hit": True, "skipped_nonfinite_steps": 3}, budget) == \
        "time cap (45 CPU-min); 3 non-finite steps skipped"
    assert tables.stopped_by({"steps": 400, "wall_budget_hit": True, "skipped_nonfinite_steps": 0}, budget) == \
        "time cap (45 CPU-min)"
    rec = {"test_structures": 945, "non_finite_predictions": 2}
    results = {"models": {"e3relax": {"label": "E3Relax", "seeds": {"0": {**rec, "non_finite_predictions": 0},
                                                                  "1": rec}}}}
    assert "): E3Relax seed 1: 2 of 945." in tables.nonfinite_note(results)
    results["models"]["e3relax"]["seeds"]["1"]["non_finite_predictions"] = 0
    assert tables.nonfinite_note(results) == ""
