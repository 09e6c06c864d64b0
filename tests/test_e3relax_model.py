"""The e3relax model: defaults, configs, ablations, and the same model as a relax_net stack."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml

from e3relax import keys
from e3relax.nn.scalar_vector import ScalarVectorMessage
from e3relax.registry import LOSSES, MODELS
from e3relax.types import RelaxOutput
from e3relax.testing import make_batch, perturb_, random_structure

CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"
TINY = {"hidden_channels": 8, "num_layers": 3, "num_rbf": 6}


def _data():
    return make_batch([random_structure(4, 31, labels=True), random_structure(6, 32, labels=True)])


def _build(spec):
    torch.manual_seed(0)
    model = MODELS.build(spec).double()
    perturb_(model, 0.05)
    return model


def test_defaults_follow_the_reference_training_script():
    sig = inspect.signature(MODELS.get("e3relax"))
    got = {k: sig.parameters[k].default for k in ("hidden_channels", "num_layers", "num_rbf", "rbf_cutoff")}
    assert got == {"hidden_channels": 512, "num_layers": 4, "num_rbf": 128, "rbf_cutoff": 30.0}


def test_returns_every_layer():
    out = _build({"name": "e3relax", **TINY})(_data())
    assert isinstance(out, RelaxOutput) and out.num_layers == 3
    assert out.pos[0].shape == (10, 3) and out.cell[0].shape == (2, 3, 3)
    assert all(not torch.equal(a, b) for a, b in zip(out.pos[:-1], out.pos[1:]))


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("e3relax*.yaml")), ids=lambda p: p.name)
def test_every_e3relax_config_builds_runs_and_trains_one_step(path):
    cfg = yaml.safe_load(path.read_text())
    model = _build({**cfg["model"], **TINY})
    loss = LOSSES.build(cfg["loss"])
    data = _data()
    total, terms = loss(model(data), data)
    total.backward()
    assert torch.isfinite(total) and terms
    assert all(p.grad is not None for n, p in model.named_parameters() if "lattice_embedding" not in n)


def test_stack_yaml_is_the_same_model_as_e3relax():
    e3 = _build({**yaml.safe_load((CONFIGS / "e3relax.yaml").read_text())["model"], **TINY})
    stack = MODELS.build({**yaml.safe_load((CONFIGS / "e3relax_stack.yaml").read_text())["model"], **TINY}).double()
    assert type(stack).__name__ == "RelaxNet"
    stack.load_state_dict(e3.state_dict(), strict=True)
    data = _data()
    a, b = e3(data), stack(data)
    assert a.num_layers == b.num_layers == 3
    for x, y in zip(a.pos + a.cell, b.pos + b.cell):
        assert torch.equal(x, y)


def test_paper_faithful_stack_spec_round_trips_through_relax_net():
    e3 = _build({"name": "e3relax", "paper_faithful": True, **TINY})
    opts = dict(e3.options, hidden_channels=8, num_layers=3, num_rbf=6, rbf_cutoff=30.0, rbf="gaussian_rbf",
                num_elements=118, lattice_nodes=True, cell_head=None, progressive=True, self_image_edges=True)
    stack = MODELS.build({"name": "relax_net", **e3.stack_spec(**opts)}).double()
    stack.load_state_dict(e3.state_dict())
    data = _data()
    assert all(torch.equal(x, y) for x, y in zip(e3(data).cell, stack(data).cell))


class DoubledMessage(ScalarVectorMessage):
    """A user's own block: the E3Relax message applied twice. Shapes: as ScalarVectorMessage."""

    def step(self, state) -> None:
        super().step(state)
        super().step(state)


def test_a_user_block_plugs_into_the_stack_by_dotted_path():
    cfg = yaml.safe_load((CONFIGS / "e3relax_stack.yaml").read_text())["model"]
    cfg = {**cfg, **TINY}
    cfg["layer"] = [b if b != "scalar_vector_message" else {"name": "test_e3relax_model.DoubledMessage"}
                    for b in cfg["layer"]]
    mine = MODELS.build(cfg).double()
    ref = _build({"name": "e3relax", **TINY})
    mine.load_state_dict(ref.state_dict())
    assert isinstance(mine.layers[0][1], DoubledMessage)
    data = _data()
    assert not torch.allclose(mine(data).pos[-1], ref(data).pos[-1])


def test_no_refinement_updates_only_in_the_last_layer():
    full = _build({"name": "e3relax", **TINY})
    last = _build({"name": "e3relax", "progressive": False, **TINY})
    out = last(_data())
    assert out.num_layers == 1 and not torch.equal(out.pos[0], _data()[keys.POS_U])
    assert [len(layer) for layer in last.layers] == [4, 4, 6]  # no unused update blocks
    assert [len(layer) for layer in full.layers] == [6, 6, 6]
    with pytest.raises(ValueError, match="4 layer_weights given but the model emitted 1 layers"):
        LOSSES.build({"name": "layerwise", "layer_weights": [1, 1, 1, 1]})(out, _data())


def test_no_self_image_edges_equals_running_on_a_graph_without_them():
    drop = _build({"name": "e3relax", "self_image_edges": False, **TINY})
    keep = _build({"name": "e3relax", **TINY})
    keep.load_state_dict(drop.state_dict())
    structs = [random_structure(4, 31), random_structure(6, 32)]
    data = make_batch(structs)
    for s in structs:
        m = s.edge_type != keys.EDGE_SELF_IMAGE
        s.edge_index, s.offsets, s.edge_type = s.edge_index[:, m], s.offsets[m], s.edge_type[m]
    stripped = make_batch(structs)
    a, b, c = drop(data), keep(stripped), keep(data)
    assert all(torch.equal(x, y) for x, y in zip(a.pos, b.pos))
    assert not torch.allclose(a.pos[-1], c.pos[-1])


@pytest.mark.parametrize("head", ["deeprelax_lattice", "equivariant_lattice"])
def test_no_lattice_nodes_uses_the_pooled_cell_head(head):
    model = _build({"name": "e3relax", "lattice_nodes": False, "cell_head": head, **TINY})
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith("lattice_embedding") for n in names)
    assert any(n.startswith("cell_head") for n in names)
    out = model(_data())
    assert out.num_layers == 3 and not torch.allclose(out.cell[-1], _data()[keys.CELL_U])


def test_relax_net_errors_name_the_problem():
    with pytest.raises(ValueError, match="give 'layer'"):
        MODELS.build({"name": "relax_net"})
    with pytest.raises(ValueError, match="refine must be 'all' or 'last', got 'some'"):
        MODELS.build({"name": "relax_net", "layer": ["scalar_vector_message"], "refine": "some"})
    with pytest.raises(ValueError, match="unknown head slot"):
        MODELS.build({"name": "relax_net", "layer": ["scalar_vector_message"], "heads": {"energy": "x"}})
    with pytest.raises(ValueError, match="block Linear in layer 0 has no step"):
        MODELS.build({"name": "relax_net", "layer": [{"name": "torch.nn.Linear", "in_features": 2, "out_features": 2}]})


@pytest.mark.slow
def test_compiled_kernels_match_eager():
    from e3relax.nn.common import use_compiled_kernels

    model = _build({"name": "e3relax", **TINY}).float()
    data = _data()
    for k in (keys.POS_U, keys.CELL_U):
        data[k] = data[k].float()
    eager = model(data)
    try:
        use_compiled_kernels(True)
        compiled = model(data)
        compiled.pos[-1].sum().backward()
    finally:
        use_compiled_kernels(False)
    for a, b in zip(eager.pos + eager.cell, compiled.pos + compiled.cell):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
