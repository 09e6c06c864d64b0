"""Shared heads: shapes, registry building, and measured (non-)equivariance in float64."""
from __future__ import annotations

import pytest
import torch

from e3relax.nn import heads  # noqa: F401  (registers the heads)
from e3relax.registry import HEADS

F = 8


def _rand_orthogonal(det: float, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) * det < 0:
        q[:, 0] = -q[:, 0]
    return q


@pytest.fixture()
def inputs():
    gen = torch.Generator().manual_seed(0)
    n, b = 7, 2
    x = torch.randn(n, F, generator=gen, dtype=torch.float64)
    v = torch.randn(n, 3, F, generator=gen, dtype=torch.float64)
    cell = 4.0 * torch.eye(3, dtype=torch.float64) + torch.randn(b, 3, 3, generator=gen, dtype=torch.float64)
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    return x, v, cell, batch


def _build(name: str, identity_init: bool = False) -> torch.nn.Module:
    """A head with generic weights (the reference initialisation) unless ``identity_init``."""
    torch.manual_seed(1)
    return HEADS.build({"name": name, "identity_init": identity_init}, hidden_channels=F).double()


def test_heads_start_at_the_input(inputs):
    """The default initialisation: zero displacement and the input cell, whatever the features."""
    x, v, cell, batch = inputs
    assert _build("gated_displacement", identity_init=True)(x * 100, v * 100).abs().max() == 0
    for name in ("deeprelax_lattice", "equivariant_lattice"):
        torch.testing.assert_close(_build(name, identity_init=True)(x * 100, cell, batch, 2), cell, atol=0, rtol=0)


@pytest.mark.parametrize("name", ["deeprelax_lattice", "equivariant_lattice"])
def test_lattice_head_strain_is_bounded(inputs, name):
    """However large the decoded change, each lattice vector moves by less than max_strain x its length."""
    x, _, cell, batch = inputs
    head = _build(name)
    with torch.no_grad():
        head.out[-1].weight.mul_(1e4)
    out = head(x, cell, batch, 2)
    change = torch.linalg.vector_norm(out - cell, dim=-1)
    bound = head.max_strain * torch.linalg.vector_norm(cell, dim=-1)
    assert bool((change < bound).all()) and float((change / bound).max()) > 0.9
    assert bool((torch.linalg.det(out).abs() > 0).all())


def test_registered_names():
    for name in ("gated_displacement", "deeprelax_lattice", "equivariant_lattice"):
        assert name in HEADS


@pytest.mark.parametrize("det", [1.0, -1.0])
def test_displacement_head_is_o3_equivariant(inputs, det):
    x, v, _, _ = inputs
    head = _build("gated_displacement")
    rot = _rand_orthogonal(det, torch.Generator().manual_seed(3))
    out = head(x, v)
    out_rot = head(x, torch.einsum("ij,njf->nif", rot, v))
    assert out.shape == (7, 3)
    assert out.abs().max() > 1e-3
    torch.testing.assert_close(out_rot, out @ rot.T, atol=1e-12, rtol=0)


def test_lattice_heads_shapes_and_residual(inputs):
    x, _, cell, batch = inputs
    for name in ("deeprelax_lattice", "equivariant_lattice"):
        head = _build(name)
        out = head(x, cell, batch, 2)
        assert out.shape == (2, 3, 3)
        assert (out - cell).abs().max() > 1e-3
    head = HEADS.build({"name": "equivariant_lattice", "symmetric": True}, hidden_channels=F).double()
    assert head(x, cell, batch, 2).shape == (2, 3, 3)


@pytest.mark.parametrize("det", [1.0, -1.0])
def test_equivariant_lattice_head_rotates(inputs, det):
    x, _, cell, batch = inputs
    rot = _rand_orthogonal(det, torch.Generator().manual_seed(5))
    head = _build("equivariant_lattice")
    out = head(x, cell, batch, 2)
    torch.testing.assert_close(head(x, cell @ rot.T, batch, 2), out @ rot.T, atol=1e-12, rtol=0)


def test_deeprelax_lattice_head_is_not_rotation_equivariant(inputs):
    """Documented defect of the DeepRelax head: the error is of the order of its output change."""
    x, _, cell, batch = inputs
    rot = _rand_orthogonal(1.0, torch.Generator().manual_seed(5))
    head = _build("deeprelax_lattice")
    out = head(x, cell, batch, 2)
    err = (head(x, cell @ rot.T, batch, 2) - out @ rot.T).abs().max()
    assert err > 1e-3 * (out - cell).abs().max()
    assert err > 1e-6


def test_lattice_heads_permutation_invariant(inputs):
    x, _, cell, batch = inputs
    perm = torch.tensor([2, 0, 1, 6, 4, 3, 5])
    for name in ("deeprelax_lattice", "equivariant_lattice"):
        head = _build(name)
        torch.testing.assert_close(head(x[perm], cell, batch[perm], 2), head(x, cell, batch, 2),
                                   atol=1e-12, rtol=0)
