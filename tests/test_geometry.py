"""Per-layer geometry in float64: equivariance, batching, gradients, lattice-atom modes."""
from __future__ import annotations

import pytest
import torch

from e3relax.geometry import atom_lattice_vectors, cell_volume, edge_vectors, to_cartesian, to_fractional

DTYPE = torch.float64


def random_rotation(gen: torch.Generator, reflect: bool = False) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=DTYPE))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect:
        q = q @ torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=DTYPE))
    return q


def structure(gen: torch.Generator, n: int = 5, num_edges: int = 12):
    cell = 4.0 * torch.eye(3, dtype=DTYPE) + torch.randn(3, 3, generator=gen, dtype=DTYPE)
    pos = torch.rand(n, 3, generator=gen, dtype=DTYPE) @ cell
    edge_index = torch.randint(0, n, (2, num_edges), generator=gen)
    offsets = torch.randint(-2, 3, (num_edges, 3), generator=gen)
    return pos, cell, edge_index, offsets


@pytest.mark.parametrize("reflect", [False, True])
def test_edge_vectors_rotate_with_positions_and_cell(reflect: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    pos, cell, edge_index, offsets = structure(gen)
    batch = torch.zeros(len(pos), dtype=torch.long)
    rot = random_rotation(gen, reflect)
    vec, dist = edge_vectors(pos, cell[None], edge_index, offsets, batch)
    # rows are vectors: x -> x R^T for positions and for every lattice vector
    vec_r, dist_r = edge_vectors(pos @ rot.T, (cell @ rot.T)[None], edge_index, offsets, batch)
    assert torch.allclose(vec_r, vec @ rot.T, atol=1e-12)
    assert torch.allclose(dist_r, dist, atol=1e-12)
    # and the definition itself, edge by edge
    j, i = edge_index
    expected = pos[j] + offsets.to(DTYPE) @ cell - pos[i]
    assert torch.allclose(vec, expected, atol=1e-12)
    assert torch.allclose(dist, expected.norm(dim=-1), atol=1e-12)


def test_edge_vectors_translation_invariant_and_wrap_consistent() -> None:
    gen = torch.Generator().manual_seed(1)
    pos, cell, edge_index, offsets = structure(gen)
    batch = torch.zeros(len(pos), dtype=torch.long)
    vec, _ = edge_vectors(pos, cell[None], edge_index, offsets, batch)
    vec_t, _ = edge_vectors(pos + torch.tensor([1.3, -2.0, 0.7], dtype=DTYPE), cell[None], edge_index, offsets, batch)
    assert torch.allclose(vec_t, vec, atol=1e-12)
    # wrapping atom a by lattice vector n @ L and compensating the offsets keeps every vector
    a, n = 2, torch.tensor([1, -1, 2])
    pos_w = pos.clone()
    pos_w[a] += n.to(DTYPE) @ cell
    off_w = offsets - (edge_index[0] == a)[:, None] * n + (edge_index[1] == a)[:, None] * n
    vec_w, _ = edge_vectors(pos_w, cell[None], edge_index, off_w, batch)
    assert torch.allclose(vec_w, vec, atol=1e-12)


def test_batch_of_two_uses_each_structures_cell() -> None:
    gen = torch.Generator().manual_seed(2)
    s1, s2 = structure(gen, n=3, num_edges=7), structure(gen, n=4, num_edges=9)
    pos = torch.cat([s1[0], s2[0]])
    cell = torch.stack([s1[1], s2[1]])
    edge_index = torch.cat([s1[2], s2[2] + 3], dim=1)
    offsets = torch.cat([s1[3], s2[3]])
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    vec, dist = edge_vectors(pos, cell, edge_index, offsets, batch)
    v1, d1 = edge_vectors(s1[0], s1[1][None], s1[2], s1[3], torch.zeros(3, dtype=torch.long))
    v2, d2 = edge_vectors(s2[0], s2[1][None], s2[2], s2[3], torch.zeros(4, dtype=torch.long))
    assert torch.allclose(vec, torch.cat([v1, v2]), atol=1e-12)
    assert torch.allclose(dist, torch.cat([d1, d2]), atol=1e-12)
    # the second structure's edges must not see the first cell
    wrong = s2[0][s2[2][0]] + s2[3].to(DTYPE) @ s1[1] - s2[0][s2[2][1]]
    nonzero = s2[3].abs().sum(dim=1) > 0
    assert not torch.allclose(vec[7:][nonzero], wrong[nonzero])


def test_edge_vector_gradients_match_finite_differences() -> None:
    gen = torch.Generator().manual_seed(3)
    pos, cell, edge_index, offsets = structure(gen, n=4, num_edges=8)
    edge_index[:, 0] = torch.tensor([1, 1])  # one self-image edge (depends on the cell only)
    offsets[0] = torch.tensor([0, 1, 1])
    batch = torch.zeros(4, dtype=torch.long)
    pos.requires_grad_(True)
    cell3 = cell[None].clone().requires_grad_(True)

    def fn(p, c):
        vec, dist = edge_vectors(p, c, edge_index, offsets, batch)
        return vec, dist

    assert torch.autograd.gradcheck(fn, (pos, cell3), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", ["tip_absolute", "centroid", "lattice_only"])
def test_lattice_atom_gradients(mode: str) -> None:
    gen = torch.Generator().manual_seed(4)
    pos, cell, _, _ = structure(gen, n=3)
    batch = torch.zeros(3, dtype=torch.long)
    pos.requires_grad_(True)
    cell3 = cell[None].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p, c: atom_lattice_vectors(p, c, batch, mode), (pos, cell3), eps=1e-6, atol=1e-7
    )


def test_lattice_atom_modes_translation_and_wrapping() -> None:
    gen = torch.Generator().manual_seed(5)
    s1, s2 = structure(gen, n=3), structure(gen, n=2)
    pos = torch.cat([s1[0], s2[0]])
    cell = torch.stack([s1[1], s2[1]])
    batch = torch.tensor([0, 0, 0, 1, 1])
    shift = torch.tensor([0.9, -1.7, 2.3], dtype=DTYPE)
    out = {m: atom_lattice_vectors(pos, cell, batch, m) for m in ("tip_absolute", "centroid", "lattice_only")}
    moved = {m: atom_lattice_vectors(pos + shift, cell, batch, m) for m in out}
    for m in out:
        vec, dist = out[m]
        assert vec.shape == (5, 3, 3) and dist.shape == (5, 3)
        assert torch.allclose(dist, vec.norm(dim=-1))
    # tip_absolute: d_ic = l_c - r_i depends on where the structure sits
    assert torch.allclose(out["tip_absolute"][0], cell[batch] - pos[:, None, :])
    assert not torch.allclose(moved["tip_absolute"][0], out["tip_absolute"][0])
    assert torch.allclose(moved["tip_absolute"][0], out["tip_absolute"][0] - shift)
    # centroid and lattice_only do not
    for m in ("centroid", "lattice_only"):
        assert torch.allclose(moved[m][0], out[m][0], atol=1e-12)
        assert torch.allclose(moved[m][1], out[m][1], atol=1e-12)
    assert torch.allclose(out["lattice_only"][0], cell[batch])
    centre = torch.stack([s1[0].mean(0)] * 3 + [s2[0].mean(0)] * 2)
    assert torch.allclose(out["centroid"][0], cell[batch] - (pos - centre)[:, None, :], atol=1e-12)
    # wrapping an atom by a lattice vector: only lattice_only is unchanged
    wrapped = pos.clone()
    wrapped[0] += cell[0, 1]
    assert torch.allclose(atom_lattice_vectors(wrapped, cell, batch, "lattice_only")[0], out["lattice_only"][0])
    assert not torch.allclose(atom_lattice_vectors(wrapped, cell, batch, "centroid")[0], out["centroid"][0])


@pytest.mark.parametrize("mode", ["tip_absolute", "centroid", "lattice_only"])
def test_lattice_atom_modes_rotate(mode: str) -> None:
    gen = torch.Generator().manual_seed(6)
    pos, cell, _, _ = structure(gen, n=4)
    batch = torch.zeros(4, dtype=torch.long)
    rot = random_rotation(gen, reflect=True)
    vec, dist = atom_lattice_vectors(pos, cell[None], batch, mode)
    vec_r, dist_r = atom_lattice_vectors(pos @ rot.T, (cell @ rot.T)[None], batch, mode)
    assert torch.allclose(vec_r, vec @ rot.T, atol=1e-12)
    assert torch.allclose(dist_r, dist, atol=1e-12)


def test_unknown_lattice_atom_mode() -> None:
    with pytest.raises(ValueError, match="unknown lattice-atom mode 'tip'; use tip_absolute, centroid or lattice_only"):
        atom_lattice_vectors(torch.zeros(1, 3, dtype=DTYPE), torch.eye(3, dtype=DTYPE)[None], torch.zeros(1, dtype=torch.long), "tip")


def test_fractional_round_trip_and_volume() -> None:
    gen = torch.Generator().manual_seed(7)
    s1, s2 = structure(gen, n=2), structure(gen, n=3)
    pos = torch.cat([s1[0], s2[0]])
    cell = torch.stack([s1[1], s2[1]])
    batch = torch.tensor([0, 0, 1, 1, 1])
    frac = to_fractional(pos, cell, batch)
    assert torch.allclose(frac[:2], s1[0] @ torch.linalg.inv(s1[1]))
    assert torch.allclose(to_cartesian(frac, cell, batch), pos, atol=1e-12)
    assert torch.allclose(cell_volume(cell), torch.stack([torch.det(s1[1]), torch.det(s2[1])]))
