"""It learns: E3Relax overfits a handful of generated relaxation pairs far below the Dummy error."""
from __future__ import annotations

import torch

from e3relax import keys
from e3relax.registry import LOSSES, MODELS
from equivariance import make_batch, random_structure


def _errors(out, data):
    pos = torch.linalg.vector_norm(out.pos[-1] - data[keys.POS_R], dim=-1).mean().item()
    cell = (out.cell[-1] - data[keys.CELL_R]).abs().mean().item()
    return pos, cell


def test_e3relax_overfits_a_few_pairs():
    torch.manual_seed(0)
    data = make_batch([random_structure(n, 100 + n, cutoff=4.0, labels=True) for n in (3, 4, 5, 6)])
    for k in (keys.POS_U, keys.CELL_U, keys.POS_R, keys.CELL_R):
        data[k] = data[k].float()
    model = MODELS.build({"name": "e3relax", "hidden_channels": 32, "num_layers": 3, "num_rbf": 16})
    loss_fn = LOSSES.build("layerwise")
    dummy_pos, dummy_cell = _errors(MODELS.build("dummy")(data), data)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        opt.zero_grad()
        loss, _ = loss_fn(model(data), data)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pos, cell = _errors(model(data), data)
    assert dummy_pos > 0.1 and dummy_cell > 0.05
    assert pos < 0.15 * dummy_pos, (pos, dummy_pos)
    assert cell < 0.15 * dummy_cell, (cell, dummy_cell)
