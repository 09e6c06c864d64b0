"""The registered layer-wise loss."""
from __future__ import annotations

import pytest
import torch

from e3relax import keys
from e3relax.registry import LOSSES
from e3relax.types import RelaxOutput
from e3relax.testing import make_batch, random_structure


@pytest.fixture()
def data():
    return make_batch([random_structure(3, 1, labels=True), random_structure(4, 2, labels=True)])


def _output(data, shifts):
    pos = [data[keys.POS_R] + s for s in shifts]
    cell = [data[keys.CELL_R] + 2 * s for s in shifts]
    return RelaxOutput(pos=pos, cell=cell)


def test_euclidean_term_is_mean_per_atom_norm_and_cell_is_l1(data):
    loss = LOSSES.build("layerwise")
    out = _output(data, [0.3, 0.1])
    total, terms = loss(out, data)
    assert terms["pos_0"].item() == pytest.approx(0.3 * 3 ** 0.5)
    assert terms["cell_0"].item() == pytest.approx(0.6)
    assert terms["pos_1"].item() == pytest.approx(0.1 * 3 ** 0.5)
    assert total.item() == pytest.approx(0.4 * 3 ** 0.5 + 0.8)
    assert set(terms) == {"pos_0", "cell_0", "pos_1", "cell_1"}


def test_l1_position_term_and_layer_weights(data):
    loss = LOSSES.build({"name": "layerwise", "pos_term": "l1", "layer_weights": [0.0, 2.0], "cell_weight": 0.5})
    total, terms = loss(_output(data, [0.3, 0.1]), data)
    assert terms["pos_0"].item() == pytest.approx(0.3)
    assert total.item() == pytest.approx(2.0 * (0.1 + 0.5 * 0.2))


def test_euclidean_differs_from_l1_on_a_single_atom_error(data):
    out = RelaxOutput(pos=[data[keys.POS_R].clone()], cell=[data[keys.CELL_R]])
    out.pos[0][0] += torch.tensor([0.3, 0.4, 0.0], dtype=out.pos[0].dtype)
    e = LOSSES.build("layerwise")(out, data)[1]["pos_0"].item()
    l1 = LOSSES.build({"name": "layerwise", "pos_term": "l1"})(out, data)[1]["pos_0"].item()
    assert e == pytest.approx(0.5 / 7) and l1 == pytest.approx(0.7 / 21)


def test_zero_at_the_target_and_gradients_flow(data):
    pos = data[keys.POS_R].clone().requires_grad_(True)
    out = RelaxOutput(pos=[pos + 0.1], cell=[data[keys.CELL_R]])
    total, _ = LOSSES.build("layerwise")(out, data)
    total.backward()
    assert pos.grad is not None and pos.grad.abs().sum() > 0
    exact = RelaxOutput(pos=[data[keys.POS_R]], cell=[data[keys.CELL_R]])
    assert LOSSES.build("layerwise")(exact, data)[0].item() == 0.0


def test_errors_name_the_problem(data):
    with pytest.raises(ValueError, match="pos_term must be 'euclidean' or 'l1', got 'l2'"):
        LOSSES.build({"name": "layerwise", "pos_term": "l2"})
    loss = LOSSES.build({"name": "layerwise", "layer_weights": [1, 1, 1, 1]})
    with pytest.raises(ValueError, match="4 layer_weights given but the model emitted 2 layers"):
        loss(_output(data, [0.1, 0.2]), data)
