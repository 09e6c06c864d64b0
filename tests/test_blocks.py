"""Registered E3Relax blocks: formulas, shapes, equivariance of each block on its own."""
from __future__ import annotations

import inspect
import re

import pytest
import torch

from e3relax.nn.common import StackedLinear, StackedMLP
from e3relax.nn.radial import polynomial_envelope
from e3relax.registry import BLOCKS, HEADS
from e3relax.testing import assert_block_equivariant



@pytest.fixture(autouse=True)
def float64():
    """Blocks are checked in float64; the default dtype is restored for other test modules."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)

MINE = ["gaussian_rbf", "bessel_rbf", "atom_embedding", "lattice_node_embedding", "scalar_vector_message",
        "tanh_self_update", "painn_update", "position_update", "lattice_atom_interaction",
        "lattice_node_update", "lattice_update", "feature_norm"]
#: a numbered paper equation or section: "Eq. 5", "Eqs. 9-12", "§2.5", "Sec. 3.4", "Appendix C"
CITATION = re.compile(r"\bEqs?\.\s*\(?\d|§\s*\d|\b(?:Sec\.|Section)\s*\d|\b(?:Appendix|App\.)\s*[A-Z]\b")
TOOLKIT = [(reg.kind, name) for reg in (BLOCKS, HEADS) for name in reg.names()
           if reg.get(name).__module__.startswith("e3relax.")]


def test_e3relax_blocks_are_registered():
    assert set(MINE) <= set(BLOCKS.names())


@pytest.mark.parametrize("kind,name", TOOLKIT, ids=[f"{k}-{n}" for k, n in TOOLKIT])
def test_block_is_registered_and_documented(kind, name):
    doc = inspect.getdoc((BLOCKS if kind == BLOCKS.kind else HEADS).get(name))
    assert "Shapes:" in doc, f"{kind} '{name}': docstring has no Shapes: section"
    assert CITATION.search(doc), (f"{kind} '{name}': docstring cites no numbered paper equation or section "
                                  "(e.g. 'Eq. 5', '§2.3', 'Appendix C')")


def test_citation_check_needs_a_number():
    for weak in ("as in the spec", "see the paper", "Eq. of motion", "Appendix", "section on lattices"):
        assert not CITATION.search(weak), weak
    for cited in ("paper Eq. 5-8", "Eqs. (9)-(12)", "e3relax-spec §2.5", "EquiformerV2 Sec. 3.3", "Appendix C",
                  "E3Relax App. C"):
        assert CITATION.search(cited), cited


def test_polynomial_envelope_values():
    u = torch.tensor([0.0, 0.2, 1.0, 1.5])
    env = polynomial_envelope(u, 5)
    assert env[0] == 1.0 and env[2] == 0.0 and env[3] == 0.0
    assert env[1].item() == pytest.approx(1 - 21 * 0.2**5 + 35 * 0.2**6 - 15 * 0.2**7)
    assert env[1].item() == pytest.approx(0.995, abs=1e-3)  # spec 1.2: env(6 A / 30 A)
    x = torch.tensor([0.999999], requires_grad=True)
    polynomial_envelope(x).sum().backward()
    assert abs(x.grad.item()) < 1e-6  # smooth at the cutoff


def test_gaussian_rbf_matches_formula():
    rbf = BLOCKS.build({"name": "gaussian_rbf", "num_rbf": 5, "cutoff": 10.0})
    d = torch.tensor([0.0, 2.5, 7.0, 12.0])
    out = rbf(d)
    assert out.shape == (4, 5)
    u = d / 10.0
    mu = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    want = polynomial_envelope(u)[:, None] * torch.exp(-((u[:, None] - mu) ** 2) / (2 * 0.25**2))
    torch.testing.assert_close(out, want)
    assert out[1].argmax() == 1 and torch.all(out[3] == 0)


def test_bessel_rbf_shape_and_support():
    rbf = BLOCKS.build({"name": "bessel_rbf", "num_rbf": 4, "cutoff": 5.0})
    out = rbf(torch.tensor([[1.0, 2.0], [4.0, 6.0]]))
    assert out.shape == (2, 2, 4) and torch.all(out[1, 1] == 0) and out[0, 0].abs().sum() > 0


def test_atom_embedding_covers_all_118_elements_and_names_bad_input():
    emb = BLOCKS.build({"name": "atom_embedding", "hidden_channels": 4})
    s, v = emb(torch.tensor([1, 118]))
    assert s.shape == (2, 4) and v.shape == (2, 3, 4) and torch.all(v == 0)
    assert s.abs().max() <= 3**0.5
    with pytest.raises(ValueError, match="atomic numbers must lie in 1..118, got 1..119"):
        emb(torch.tensor([1, 119]))


def test_lattice_node_embedding_one_row_per_direction():
    emb = BLOCKS.build({"name": "lattice_node_embedding", "hidden_channels": 4})
    y, ybar = emb(2)
    assert y.shape == (2, 3, 4) and ybar.shape == (2, 3, 3, 4)
    assert torch.equal(y[0], y[1]) and not torch.equal(y[0, 0], y[0, 1])


@pytest.mark.parametrize("stacks", [1, 3])
def test_stacked_linear_vectorised_equals_indexed(stacks):
    torch.manual_seed(0)
    lin = StackedLinear(stacks, 4, 5).double()
    mlp = StackedMLP(stacks, [4, 6, 5], act_last=True).double()
    x = torch.randn(7, 3, 4)
    for f in (lin, mlp):
        vec = f(x)
        for c in range(3):
            torch.testing.assert_close(vec[:, c], f(x[:, c], c))


def _features(n=5, f=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, f, generator=g), torch.randn(n, 3, f, generator=g)


def test_scalar_vector_message_is_equivariant_and_sums_over_neighbours():
    torch.manual_seed(0)
    blk = BLOCKS.build({"name": "scalar_vector_message", "hidden_channels": 6, "num_rbf": 4}).double()
    s, v = _features()
    ei = torch.tensor([[1, 2, 3, 4, 0], [0, 0, 1, 2, 3]])
    unit = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    rbf = torch.rand(5, 4)
    assert_block_equivariant(blk, (s, v, rbf, unit, ei), kinds=("scalar", "vector", "scalar", "cartesian", "scalar"),
                             out_kinds=("scalar", "vector"))
    # atom 4 receives nothing: scalars only rescaled by 1/sqrt 2, vectors unchanged
    s1, v1 = blk(s, v, rbf, unit, ei)
    torch.testing.assert_close(s1[4], s[4] / 2**0.5)
    torch.testing.assert_close(v1[4], v[4])


@pytest.mark.parametrize("name", ["tanh_self_update", "painn_update"])
def test_self_updates_are_equivariant(name):
    torch.manual_seed(0)
    blk = BLOCKS.build({"name": name, "hidden_channels": 6})
    assert_block_equivariant(blk, _features(), kinds=("scalar", "vector"), out_kinds=("scalar", "vector"))


def test_painn_update_scaled_and_unscaled_formulas():
    torch.manual_seed(0)
    s, v = _features()
    for scaled in (True, False):
        blk = BLOCKS.build({"name": "painn_update", "hidden_channels": 6, "scaled": scaled}).double()
        uv, vv = torch.split(blk.vec_proj(v), 6, dim=-1)
        a = blk.scalar_mlp(torch.cat([s, torch.sqrt((vv**2).sum(1) + 1e-8)], -1))
        a_ss, a_sv, a_vv = torch.split(a, 6, dim=-1)
        dot = (uv * vv).sum(1)
        ds = (a_ss + a_sv * dot / 6**0.5) / 2**0.5 if scaled else a_ss + a_sv * dot
        s1, v1 = blk(s, v)
        torch.testing.assert_close(s1, s + ds)
        torch.testing.assert_close(v1, v + a_vv[:, None] * uv)


def test_position_update_step_scale_and_equivariance():
    torch.manual_seed(0)
    full = BLOCKS.build({"name": "position_update", "hidden_channels": 6}).double()
    half = BLOCKS.build({"name": "position_update", "hidden_channels": 6, "step_scale": 0.5}).double()
    half.load_state_dict(full.state_dict())
    s, v = _features()
    torch.testing.assert_close(half(s, v), 0.5 * full(s, v))
    assert_block_equivariant(full, (s, v), kinds=("scalar", "vector"), out_kinds="cartesian", perturb=0.1)


def _lattice_inputs(seed: int = 0):
    """Two structures (2 + 3 atoms) with features, lattice-node states, positions and cells."""
    g = torch.Generator().manual_seed(seed)
    s, v = _features(5, 6, seed)
    y, ybar = torch.randn(2, 3, 6, generator=g), torch.randn(2, 3, 3, 6, generator=g)
    cell = torch.eye(3) * 4 + 0.4 * torch.randn(2, 3, 3, generator=g)
    batch = torch.tensor([0, 0, 1, 1, 1])
    pos = torch.einsum("nd,ndk->nk", torch.rand(5, 3, generator=g), cell[batch])
    return s, v, y, ybar, pos, cell, batch


@pytest.mark.parametrize("mode", ["tip_absolute", "centroid", "lattice_only"])
def test_lattice_atom_interaction_is_equivariant(mode):
    torch.manual_seed(0)
    blk = BLOCKS.build({"name": "lattice_atom_interaction", "hidden_channels": 6, "num_rbf": 4,
                        "geometry_mode": mode})
    radial = BLOCKS.build({"name": "gaussian_rbf", "num_rbf": 4, "cutoff": 30.0})
    assert_block_equivariant(blk, (*_lattice_inputs(), radial),
                             kinds=("scalar", "vector", "scalar", "vector", "cartesian", "cartesian", "scalar",
                                    "scalar"),
                             out_kinds=("scalar", "vector"))


def test_lattice_node_update_is_equivariant():
    torch.manual_seed(0)
    blk = BLOCKS.build({"name": "lattice_node_update", "hidden_channels": 6, "per_lattice_params": True})
    s, v, y, ybar, _, _, batch = _lattice_inputs(1)
    assert_block_equivariant(blk, (s, v, y, ybar, batch, 2),
                             kinds=("scalar", "vector", "scalar", "vector", "scalar", "scalar"),
                             out_kinds=("scalar", "vector"))


@pytest.mark.parametrize("affine", [False, True])
def test_lattice_update_rows_are_equivariant_columns_are_not(affine):
    torch.manual_seed(0)
    _, _, _, ybar, pos, cell, batch = _lattice_inputs(2)
    kinds = ("cartesian", "cartesian", "vector", "scalar")
    rows = BLOCKS.build({"name": "lattice_update", "hidden_channels": 6, "affine_positions": affine})
    assert_block_equivariant(rows, (pos, cell, ybar, batch), kinds=kinds, out_kinds=("cartesian", "cartesian"),
                             perturb=0.1)
    cols = BLOCKS.build({"name": "lattice_update", "hidden_channels": 6, "affine_positions": affine,
                         "transpose": True})
    with pytest.raises(AssertionError, match=r"LatticeUpdate is not equivariant.*output 1 \(cartesian\) under rotation"):
        assert_block_equivariant(cols, (pos, cell, ybar, batch), kinds=kinds, out_kinds=("cartesian", "cartesian"),
                                 perturb=0.1)


def test_lattice_update_rows_columns_and_affine_positions():
    torch.manual_seed(0)
    ref = {"name": "lattice_update", "hidden_channels": 6, "per_lattice_params": True, "identity_init": False}
    rows = BLOCKS.build(ref).double()
    cols = BLOCKS.build({**ref, "transpose": True}).double()
    aff = BLOCKS.build({**ref, "affine_positions": True}).double()
    cols.load_state_dict(rows.state_dict())
    aff.load_state_dict(rows.state_dict())
    ybar = torch.randn(1, 3, 3, 6)
    cell = torch.eye(3) * 4 + 0.3 * torch.randn(3, 3)
    pos, batch = torch.rand(4, 3) @ cell, torch.zeros(4, dtype=torch.long)
    d = rows.delta(ybar)[0]
    for c in range(3):  # row c is W_l^c ybar_c
        torch.testing.assert_close(d[c], ybar[0, c] @ rows.vec_out.weight[c, 0])
    torch.testing.assert_close(cols.delta(ybar)[0], d.T)
    p_rows, c_rows = rows(pos, cell[None], ybar, batch)
    assert torch.equal(p_rows, pos)
    p_aff, c_aff = aff(pos, cell[None], ybar, batch)
    torch.testing.assert_close(c_aff, c_rows)
    torch.testing.assert_close(p_aff @ torch.linalg.inv(c_aff[0]), pos @ torch.linalg.inv(cell))


@pytest.mark.parametrize("per_lattice", [False, True])
def test_lattice_node_update_vectorised_equals_per_node_loop(per_lattice):
    torch.manual_seed(0)
    blk = BLOCKS.build({"name": "lattice_node_update", "hidden_channels": 6,
                        "per_lattice_params": per_lattice}).double()
    s, v = _features(5)
    batch = torch.tensor([0, 0, 1, 1, 1])
    y, ybar = torch.randn(2, 3, 6), torch.randn(2, 3, 3, 6)
    y1, ybar1 = blk(s, v, y, ybar, batch, 2)
    for c in range(3):
        ms = torch.stack([s[:2].mean(0), s[2:].mean(0)])
        mv = torch.stack([v[:2].mean(0), v[2:].mean(0)])
        yc = y[:, c] + blk.global_mlp(torch.cat([ms, y[:, c]], -1), c)
        ybc = ybar[:, c] + blk.global_vec(mv + ybar[:, c], c)
        h1, h2 = torch.split(blk.vec_proj(ybc, c), 6, dim=-1)
        k = blk.gate_mlp(torch.cat([yc, torch.sqrt((h2**2).sum(1) + 1e-8)], -1), c)
        k1, k2, k3 = torch.split(k, 6, dim=-1)
        torch.testing.assert_close(y1[:, c], k2 + yc * torch.tanh(k3))
        torch.testing.assert_close(ybar1[:, c], k1[:, None] * h1 + ybc)


def test_lattice_atom_interaction_rejects_unknown_geometry():
    with pytest.raises(ValueError, match="geometry_mode 'tip' unknown"):
        BLOCKS.build({"name": "lattice_atom_interaction", "hidden_channels": 4, "num_rbf": 3,
                      "geometry_mode": "tip"})


def test_updates_start_at_zero_and_old_position_checkpoints_load_ungated():
    torch.manual_seed(0)
    s, v = torch.randn(5, 6), torch.randn(5, 3, 6) * 100
    pos_block = BLOCKS.build({"name": "position_update", "hidden_channels": 6})
    assert pos_block(s, v).abs().max() == 0
    lat = BLOCKS.build({"name": "lattice_update", "hidden_channels": 6})
    cell = (torch.eye(3) * 4 + 0.3 * torch.randn(3, 3))[None]
    assert torch.equal(lat(torch.rand(4, 3), cell, torch.randn(1, 3, 3, 6) * 100, torch.zeros(4, dtype=torch.long))[1], cell)
    old = {k: val for k, val in BLOCKS.build({"name": "position_update", "hidden_channels": 6,
                                             "identity_init": False}).state_dict().items() if k != "alpha_gate"}
    pos_block.load_state_dict(old)  # saved before the gate existed: gate 1, the old forward
    assert torch.equal(pos_block.alpha_gate, torch.ones(6))


def test_lattice_update_strain_is_bounded_and_equivariant():
    """However large ybar, one layer moves lattice vector c by less than max_strain |l_c|; exactly O(3)."""
    torch.manual_seed(0)
    block = BLOCKS.build({"name": "lattice_update", "hidden_channels": 6, "identity_init": False}).double()
    cell = (torch.eye(3) * 4 + 0.3 * torch.randn(3, 3)).double()[None]
    pos, batch = torch.rand(4, 3).double() @ cell[0], torch.zeros(4, dtype=torch.long)
    for scale in (1e-3, 1.0, 1e3, 1e6):
        ybar = torch.randn(1, 3, 3, 6, dtype=torch.float64) * scale
        _, new = block(pos, cell, ybar, batch)
        change = torch.linalg.vector_norm(new - cell, dim=-1)
        assert bool((change < block.max_strain * torch.linalg.vector_norm(cell, dim=-1)).all())
        assert torch.isfinite(new).all() and bool((torch.linalg.det(new).abs() > 0.1 * torch.linalg.det(cell).abs()).all())
    small = torch.randn(1, 3, 3, 6, dtype=torch.float64) * 1e-4  # a near-identity update is unchanged
    torch.testing.assert_close(block.delta(small, cell), block.delta(small), rtol=1e-6, atol=0)
    kinds = ("cartesian", "cartesian", "vector", "scalar")
    assert_block_equivariant(block, (pos, cell, torch.randn(1, 3, 3, 6, dtype=torch.float64) * 1e3, batch),
                             kinds=kinds, out_kinds=("cartesian", "cartesian"))


def test_feature_norm_is_equivariant_and_normalises():
    from e3relax.nn.norm import vector_rms_norm

    torch.manual_seed(0)
    blk = BLOCKS.build({"name": "feature_norm", "hidden_channels": 6})
    s, v = _features()
    assert_block_equivariant(blk, (s * 50, v * 1e4), kinds=("scalar", "vector"), out_kinds=("scalar", "vector"),
                             perturb=0.1)
    s1, v1 = blk(s * 1e6, v * 1e6)  # any magnitude comes out at unit scale
    torch.testing.assert_close(s1.mean(-1), torch.zeros(len(s)), atol=1e-6, rtol=0)
    torch.testing.assert_close((v1 * v1).sum(1).mean(-1), torch.ones(len(s)), atol=1e-6, rtol=0)
    torch.testing.assert_close(blk(s, torch.zeros_like(v))[1], torch.zeros_like(v))  # zero vectors stay zero
    y, ybar = _lattice_inputs()[2:4]
    torch.testing.assert_close((vector_rms_norm(ybar * 1e5, torch.ones(6), 1e-6) ** 2).sum(-2).mean(-1),
                               torch.ones(2, 3))
