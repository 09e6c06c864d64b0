"""The one evaluation path: ``evaluate()`` for a model, an ensemble and the Dummy; the report; devices."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import e3relax.models  # noqa: F401 - registers the models
from e3relax import keys
from e3relax.device import resolve_device
from e3relax.engine.evaluation import evaluate
from e3relax.metrics import MAE_POS, MAE_VOL, POOLED_MAE_POS, structure_metrics
from e3relax.registry import GRAPHS, MODELS

GRAPH = {"name": "periodic_multi_edge", "cutoff": 5.0, "max_neighbors": 12}
SPEC = {"name": "e3relax", "hidden_channels": 8, "num_layers": 2, "num_rbf": 8}


@pytest.fixture(scope="module")
def records():
    from ase.build import bulk

    from e3relax.records import make_record, record_to_data

    out = []
    for i, a in enumerate([bulk("NaCl", "rocksalt", a=5.6), bulk("Si", "diamond", a=5.43),
                           bulk("Cu", "fcc", a=3.6, cubic=True)]):
        u = a.copy()
        u.rattle(0.05, seed=i)
        u.set_cell(u.cell.array * 1.02, scale_atoms=True)
        rec, _ = make_record(u, a, f"s{i}", GRAPHS.build(GRAPH))
        out.append(record_to_data(rec, torch.float64))
    return out


def _model(seed: int) -> torch.nn.Module:
    """A model whose weights are generic (every model starts at its input; this one must not)."""
    from e3relax.testing import perturb_

    torch.manual_seed(seed)
    model = MODELS.build(SPEC).double().eval()
    perturb_(model, 0.05, seed)
    return model


def test_rows_are_the_metrics_of_each_structure(records):
    model = _model(0)
    table = evaluate(model, records, batch_size=2, progress=None, keep_structures=True)
    assert table.ids == ["s0", "s1", "s2"] and table.natoms == [2, 2, 4]
    for b, d in enumerate(records):
        with torch.no_grad():
            out = model(type(d).from_dict(d.to_dict()))  # one structure alone
        batch = torch.zeros(d.num_nodes, dtype=torch.long)
        want = structure_metrics(out.final_pos, out.final_cell, d[keys.POS_R], d[keys.CELL_R], batch)
        dummy = structure_metrics(d[keys.POS_U], d[keys.CELL_U], d[keys.POS_R], d[keys.CELL_R], batch)
        for name in (MAE_POS, MAE_VOL):
            assert table.metrics[name][b] == pytest.approx(float(want[name][0]), rel=1e-9)
            assert table.dummy[name][b] == pytest.approx(float(dummy[name][0]), rel=1e-9)
        assert np.allclose(table.structures[b].positions, out.final_pos.numpy())
    assert table.summary[MAE_POS] == pytest.approx(table.metrics[MAE_POS].mean())
    pooled = (table.metrics[MAE_POS] * np.asarray(table.natoms)).sum() / sum(table.natoms)
    assert table.summary[POOLED_MAE_POS] == pytest.approx(pooled)
    assert "uncertainty" not in table.extra


def test_dummy_model_scores_as_the_dummy_column(records):
    table = evaluate(MODELS.build({"name": "dummy"}), records, progress=None)
    for name in (MAE_POS, MAE_VOL):
        assert np.allclose(table.metrics[name], table.dummy[name])


def test_relaxer_evaluation_is_its_relax(records):
    """Evaluating a Relaxer frames and projects each structure exactly as ``relax`` does."""
    from e3relax.predict import Relaxer

    relaxer = Relaxer([_model(0)], GRAPH, dtype=torch.float64)
    table = evaluate(relaxer, records, batch_size=2, progress=None, keep_structures=True)
    for inp, out in zip(table.inputs, table.structures):
        want = relaxer.relax(inp)["final_structure"]
        assert np.abs(out.positions - want.positions).max() < 1e-10
        assert np.abs(out.cell.array - want.cell.array).max() < 1e-10


def test_ensemble_reports_uncertainty_and_the_mean(records):
    from e3relax.predict import Relaxer

    members = [_model(0), _model(1)]
    raw = Relaxer(members, GRAPH, dtype=torch.float64, symmetry=False, canonical=False)  # as the bare models
    ens = evaluate(raw, records, progress=None, keep_structures=True)
    assert np.all(ens.extra["uncertainty"] > 0)
    singles = [evaluate(m, records, progress=None, keep_structures=True) for m in members]
    for b in range(len(records)):
        mean = (singles[0].structures[b].positions + singles[1].structures[b].positions) / 2
        assert np.allclose(ens.structures[b].positions, mean, atol=1e-10)
        spread = np.sqrt(np.mean(np.sum((singles[0].structures[b].positions - mean) ** 2, axis=1)))
        assert ens.extra["uncertainty"][b] == pytest.approx(spread, rel=1e-8)
    assert "uncertainty" in ens.columns() and "dummy_mae_pos" in ens.columns()


def test_evaluate_checkpoint_takes_a_pretrained_name(records, tmp_path):
    from e3relax.engine.report import evaluate_checkpoint

    doc = evaluate_checkpoint("pnictides", records[:2], tmp_path / "out", device="cpu")
    assert doc["num_structures"] == 2 and len(doc["members"]) > 1
    assert doc["model"]["uncertainty"] > 0 and doc["dummy"][MAE_POS] > 0
    header = (tmp_path / "out" / "per_structure.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["id", "natoms", MAE_POS] and "uncertainty" in header
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == doc


def test_default_output_folder_is_a_plain_results_folder(tmp_path):
    from e3relax.cli.evaluate import default_out

    run = tmp_path / "runs" / "mine"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(b"")
    assert default_out(str(run / "checkpoints" / "best.pt"), "data/pnictides/test.lmdb") == run / "eval" / "test"
    assert default_out(str(run), "data/x/val.lmdb/") == run / "eval" / "val"
    assert str(default_out("pnictides", "data/p/test.lmdb")) == "results/eval/pnictides/test"


def test_one_device_resolver():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want and resolve_device(None).type == want
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'gpu0' is not a device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
