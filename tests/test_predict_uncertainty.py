"""Uncertainty scoring: rank correlation, flag recall, and scoring a relaxer on labelled records."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import e3relax.models  # noqa: F401 - registers the models
from e3relax import keys
from e3relax.predict.uncertainty import uncertainty_quality
from e3relax.testing import perturb_


def test_quality_perfect_and_threshold():
    err = np.arange(20.0)
    q = uncertainty_quality(err * 2 + 1, err, worst=0.1)
    assert q["spearman"] == pytest.approx(1.0) and q["recall_worst"] == 1.0 and q["flagged_fraction"] == 0.1
    q = uncertainty_quality(-err, err, worst=0.1)
    assert q["recall_worst"] == 0.0 and q["spearman"] == pytest.approx(-1.0)
    q = uncertainty_quality(err, err, worst=0.1, threshold=15.5)  # flags 16..19: catches 18, 19
    assert q["flagged_fraction"] == 0.2 and q["recall_worst"] == 1.0 and q["precision"] == 0.5


def test_score_relaxer_on_labelled_records():
    from ase.build import bulk

    from e3relax.predict import Relaxer
    from e3relax.records import make_record, record_to_data
    from e3relax.registry import GRAPHS, MODELS

    spec = {"name": "e3relax", "hidden_channels": 8, "num_layers": 2, "num_rbf": 8}
    graph = {"name": "periodic_multi_edge", "cutoff": 5.0, "max_neighbors": 12}
    models = []
    for s in (0, 1):
        torch.manual_seed(s)
        model = MODELS.build(spec).eval()
        perturb_(model, 0.05, s)  # generic weights: at initialisation every member returns its input
        models.append(model)
    relaxer = Relaxer(models, graph)
    data = []
    for i, a in enumerate([bulk("NaCl", "rocksalt", a=5.6), bulk("Si", "diamond", a=5.43)]):
        u = a.copy()
        u.rattle(0.05, seed=i)
        rec, _ = make_record(u, a, f"s{i}", GRAPHS.build(graph))
        data.append(record_to_data(rec))
    from e3relax.predict.uncertainty import score_relaxer

    rows = score_relaxer(relaxer, data)
    assert list(rows["id"]) == ["s0", "s1"] and np.all(rows["uncertainty"] > 0)
    assert np.allclose(rows["dummy_mae_pos"], [np.abs(d[keys.POS_U] - d[keys.POS_R]).mean().item() for d in data], atol=1e-6)
