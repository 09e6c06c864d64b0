"""Models are assembled from components: the shared input step, typed heads, registry-built blocks,
symmetry laws composed from the components' declarations, and the stack's state-field check."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from e3relax.model_base import SymmetryLaws, compose_laws, prepare_inputs
from e3relax.nn.heads import CARTESIAN_CELL, DisplacementHead, LatticeHead
from e3relax.registry import BLOCKS, GRAPHS, HEADS, MODELS, PRIORS
from e3relax.testing import make_batch, perturb_, random_structure, to_data

TOOLKIT_MODELS = [n for n in MODELS.names() if MODELS.get(n).__module__.startswith("e3relax.")]


def _model(name: str, **overrides):
    torch.manual_seed(0)
    model = MODELS.build({"name": name, **MODELS.get(name).test_config(), **overrides}).double().eval()
    perturb_(model, 0.05)
    return model


@pytest.mark.parametrize("name", TOOLKIT_MODELS)
def test_every_model_runs_on_an_unbatched_data(name):
    model = _model(name)
    s = random_structure(4, 21)
    with torch.no_grad():
        single = model(to_data(s))
        batched = model(make_batch([s]))
    assert single.num_layers == batched.num_layers
    for a, b in zip(single.pos + single.cell, batched.pos + batched.cell):
        assert torch.isfinite(a).all() and torch.allclose(a, b, atol=1e-10, rtol=0)


def test_prepare_inputs_defaults_for_an_unbatched_data():
    s = random_structure(3, 5)
    inp = prepare_inputs(to_data(s))
    assert inp.batch.tolist() == [0, 0, 0] and inp.cell.shape == (1, 3, 3) and inp.num_graphs == 1
    j, i = s.edge_index
    want = s.pos[j] + s.offsets.double() @ s.cell - s.pos[i]
    assert torch.allclose(inp.vec, want) and torch.allclose(inp.dist, want.norm(dim=-1))


@pytest.mark.parametrize("name", TOOLKIT_MODELS)
def test_baselines_build_their_blocks_through_the_registry(name):
    """Every toolkit component a model holds directly came from BLOCKS, HEADS or PRIORS."""
    model = _model(name)
    children = []
    for child in model.children():
        children.extend(child if isinstance(child, (torch.nn.ModuleList, torch.nn.ModuleDict)) else [child])
    for c in children:
        for sub in (c if isinstance(c, torch.nn.ModuleList) else [c]):
            if type(sub).__module__.startswith("e3relax."):
                reg = getattr(type(sub), "registry_name", None)
                assert reg in BLOCKS or reg in HEADS or reg in PRIORS, f"{name}: {type(sub).__name__} is not built from a registry"


# ----------------------------------------------------------------------------- typed heads
def test_heads_have_one_base_class_per_kind():
    assert issubclass(HEADS.get("gated_displacement"), DisplacementHead)
    for name in ("deeprelax_lattice", "equivariant_lattice"):
        assert issubclass(HEADS.get(name), LatticeHead)


def test_lattice_head_per_layer():
    torch.manual_seed(0)
    head = HEADS.build("equivariant_lattice", hidden_channels=4).double()
    feats = [torch.randn(5, 4, dtype=torch.float64) for _ in range(3)]
    cell = torch.eye(3, dtype=torch.float64)[None] * 4.0
    batch = torch.zeros(5, dtype=torch.long)
    every = head.per_layer(feats, cell, batch, 1)
    last = head.per_layer(feats, cell, batch, 1, every_layer=False)
    assert [torch.equal(c, head(x, cell, batch, 1)) for c, x in zip(every, feats)] == [True] * 3
    assert all(torch.equal(c, every[-1]) for c in last)


# ----------------------------------------------------------------------------- composed laws
class _PlainHead(LatticeHead):
    """A user's lattice head declaring nothing: ``L_hat = L_u`` (keeps every law)."""

    def __init__(self, hidden_channels: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(hidden_channels, 1)

    def forward(self, s, cell_u, batch, num_graphs):
        return cell_u


class _CartesianHead(_PlainHead):
    symmetry = SymmetryLaws(rotation=False, reflection=False, broken={"rotation": "reads xyz", "reflection": "reads xyz"})


@pytest.mark.parametrize("name", ["painn", "egnn", "hegnn", "gotennet", "equiformer_v2", "deeprelax"])
def test_an_unknown_head_gets_the_same_verdict_in_every_baseline(name):
    f = MODELS.get(name).test_config()["hidden_channels"]
    plain = MODELS.build({"name": name, **MODELS.get(name).test_config(), "lattice_head": _PlainHead(f)}).laws()
    cart = MODELS.build({"name": name, **MODELS.get(name).test_config(), "lattice_head": _CartesianHead(f)}).laws()
    assert "reads xyz" in cart.broken["rotation"] and "reads xyz" in cart.broken["reflection"]
    assert "reads xyz" not in plain.broken.get("rotation", "") and CARTESIAN_CELL not in str(plain.broken)
    default = MODELS.build({"name": name, **MODELS.get(name).test_config()}).laws()
    assert CARTESIAN_CELL in default.broken["rotation"]  # the shipped default head breaks it


def test_deeprelax_laws_do_not_depend_on_training_mode():
    model = MODELS.build({"name": "deeprelax", **MODELS.get("deeprelax").test_config(),
                          "lattice_head": "equivariant_lattice"})
    assert model.train().laws() == model.eval().laws()
    laws = model.laws()
    assert set(laws.broken) == {"rotation", "reflection", "wrap"}
    assert set(laws.approximate) == {"translation", "permutation"}  # Adam amplifies rounding


def test_compose_laws_takes_the_most_demanding_mode_and_joins_reasons():
    laws = compose_laws([SymmetryLaws(translation="fractional", wrap="predicted_cell"),
                         SymmetryLaws(broken={"wrap": "a"}), SymmetryLaws(broken={"wrap": "b"}), None],
                        measured={"wrap": "1e-2"})
    assert laws.translation == "fractional" and laws.wrap == "none"
    assert laws.broken == {"wrap": "a; b; measured with test_config(): 1e-2"}


def test_e3relax_laws_follow_its_block_options():
    pf = _model("e3relax", paper_faithful=True).laws()
    assert set(pf.broken) == {"rotation", "reflection", "translation", "wrap"}
    assert "transposed" in pf.broken["rotation"] and "tip_absolute" in pf.broken["translation"]
    assert "5.7e-2" in pf.broken["rotation"]  # the measured error of this configuration
    assert _model("e3relax", transpose_cell_update=True).laws().broken.keys() == {"rotation", "reflection"}


# ----------------------------------------------------------------------------- relax_net state check
def test_relax_net_refuses_a_block_whose_inputs_nothing_writes():
    with pytest.raises(ValueError, match=r"layer 0 block 0 'lattice_atom_interaction'.*reads y, ybar.*lattice_node_embedding"):
        MODELS.build({"name": "relax_net", "hidden_channels": 8, "num_layers": 1, "num_rbf": 6,
                      "lattice_embedding": None, "layer": ["lattice_atom_interaction", "scalar_vector_message"]})


def test_relax_net_accepts_a_consistent_stack_and_undeclared_user_blocks():
    class UserBlock(torch.nn.Module):  # declares nothing: not checked, assumed to keep every law
        def step(self, state):
            pass

    model = MODELS.build({"name": "relax_net", "hidden_channels": 8, "num_layers": 1, "num_rbf": 6,
                          "lattice_embedding": None, "layer": ["scalar_vector_message", UserBlock(), "position_update"]})
    assert model.laws().broken == {}


# ----------------------------------------------------------------------------- fidelity fixes
def test_paper_faithful_is_finite_with_an_atom_on_a_lattice_vector_tip():
    s = random_structure(3, 7)
    s.pos[0] = s.cell[0]  # fractional (1, 0, 0): l_1 - r_0 = 0 in the tip_absolute geometry
    model = _model("e3relax", paper_faithful=True)
    with torch.no_grad():
        out = model(make_batch([s]))
    assert all(torch.isfinite(p).all() for p in out.pos + out.cell)


def test_no_self_image_removes_every_edge_to_an_atoms_own_image():
    cell = np.diag([3.0, 3.2, 3.4])
    pos = np.array([[0.0, 0.0, 0.0], [1.5, 1.6, 0.0], [0.0, 1.6, 1.7]])
    graph = GRAPHS.build({"name": "periodic_multi_edge", "cutoff": 6.0, "max_neighbors": 50})(pos, cell)
    edge_index = torch.as_tensor(graph.edge_index)
    own_images = int((edge_index[0] == edge_index[1]).sum())
    radius_own = int(((edge_index[0] == edge_index[1]) & (torch.as_tensor(graph.edge_type) == 0)).sum())
    assert radius_own > 0, "fixture must have i -> i radius edges inside the cutoff"
    s = random_structure(3, 1)
    s.pos, s.cell = torch.as_tensor(pos), torch.as_tensor(cell)
    s.z = torch.tensor([11, 17, 8])
    s.edge_index, s.offsets, s.edge_type = edge_index, torch.as_tensor(graph.cell_offsets), torch.as_tensor(graph.edge_type)
    model = _model("e3relax", self_image_edges=False)
    state = model.initial_state(make_batch([s]))
    assert not (state.edge_index[0] == state.edge_index[1]).any()
    assert state.edge_index.shape[1] == edge_index.shape[1] - own_images
    kept = _model("e3relax").initial_state(make_batch([s]))
    assert kept.edge_index.shape[1] == edge_index.shape[1]


class _Converted(list):
    """Records plus the LMDB-style metadata saying which graph built them."""

    def __init__(self, graph: dict) -> None:
        super().__init__()
        self.metadata = {"graph": graph}


def test_paper_faithful_refuses_data_converted_with_another_graph():
    from e3relax.engine.evaluation import evaluate
    from e3relax.model_base import GraphMismatchError, check_graph

    default_graph = GRAPHS.build({"name": "periodic_multi_edge"}).params()
    reference_graph = GRAPHS.build({"name": "periodic_multi_edge", "paper_faithful": True}).params()
    faithful = MODELS.build({"name": "e3relax", **MODELS.get("e3relax").test_config(), "paper_faithful": True})
    with pytest.raises(GraphMismatchError, match=r"data.train: model 'e3relax' needs .*paper_faithful: needs True, "
                                                 r"data has False.*--graph periodic_multi_edge --graph-opt paper_faithful=true"):
        check_graph(faithful, _Converted(default_graph), "data.train")
    with pytest.raises(GraphMismatchError):
        evaluate(faithful, torch.utils.data.Subset(_Converted(default_graph), []), progress=None)
    check_graph(faithful, _Converted(reference_graph))
    check_graph(faithful, [])  # no metadata: nothing to check
    check_graph(MODELS.build({"name": "e3relax", **MODELS.get("e3relax").test_config()}), _Converted(reference_graph))
