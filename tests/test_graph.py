"""Periodic multi-edge graph builder: brute force, nearest-K, shells, self images, reference mode."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from e3relax import keys
from e3relax.graph import GraphEdges, PeriodicMultiEdgeGraph, build_graph
from e3relax.registry import GRAPHS, RegistryError

POSITIVE = [(0, 0, 1), (0, 1, 0), (1, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0)]


# ----------------------------------------------------------------------------- brute force
def brute_force(pos: np.ndarray, cell: np.ndarray, pbc, cutoff: float) -> dict[tuple, float]:
    """{(i, j, k1, k2, k3): dist} for 0 < |pos[j] + k @ cell - pos[i]| < cutoff.

    Images are enumerated in a cube large enough by a singular-value bound:
    |k @ L_p| >= sigma_min(L_p) |k|, so |k| > (cutoff + span) / sigma_min cannot be within reach.
    """
    pbc = np.asarray(pbc, dtype=bool)
    span = np.ptp(pos, axis=0).sum() if len(pos) else 0.0
    ranges = []
    if pbc.any():
        sigma_min = np.linalg.svd(cell[pbc], compute_uv=False).min()
        reach = int(np.ceil((cutoff + span) / sigma_min)) + 1
    for c in range(3):
        ranges.append(range(-reach, reach + 1) if pbc[c] else range(0, 1))
    ks = np.array(list(itertools.product(*ranges)), dtype=np.int64)
    shifts = ks @ cell
    out = {}
    for i in range(len(pos)):
        for j in range(len(pos)):
            d = np.linalg.norm(pos[j] + shifts - pos[i], axis=1)
            for k, dist in zip(ks[d < cutoff], d[d < cutoff]):
                if i == j and not k.any():
                    continue
                out[(i, j, *map(int, k))] = float(dist)
    return out


def edge_dict(g: GraphEdges, pos, cell, edge_type=keys.EDGE_RADIUS) -> dict[tuple, float]:
    m = g.edge_type == edge_type
    j, i = g.edge_index[:, m]
    k = g.cell_offsets[m]
    d = np.linalg.norm(pos[j] + k @ cell - pos[i], axis=1)
    keys_ = [(int(a), int(b), *map(int, c)) for a, b, c in zip(i, j, k)]
    assert len(set(keys_)) == len(keys_), "duplicate radius edges"
    return dict(zip(keys_, d.tolist()))


def check_format(g: GraphEdges, n: int) -> None:
    assert g.edge_index.dtype == np.int64 and g.edge_index.shape == (2, g.num_edges)
    assert g.cell_offsets.dtype == np.int64 and g.cell_offsets.shape == (g.num_edges, 3)
    assert g.edge_type.dtype == np.int64 and g.edge_type.shape == (g.num_edges,)
    assert np.all(np.diff(g.edge_index[1]) >= 0), "edges must be sorted by centre"
    assert g.edge_index.size == 0 or (g.edge_index.min() >= 0 and g.edge_index.max() < n)
    assert set(np.unique(g.edge_type).tolist()) <= {keys.EDGE_RADIUS, keys.EDGE_SELF_IMAGE}


def random_triclinic(rng: np.random.Generator, n: int, scale: float = 3.5):
    cell = np.eye(3) * scale + rng.normal(scale=0.8, size=(3, 3))
    frac = rng.uniform(-0.3, 1.3, size=(n, 3))  # some atoms outside the cell on purpose
    return frac @ cell, cell


SKEWED = np.array([[4.0, 0.0, 0.0], [3.8, 0.6, 0.0], [3.5, 0.3, 0.7]])

CASES = {
    "triclinic_3": lambda rng: (*random_triclinic(rng, 3), (True, True, True), 5.0),
    "triclinic_5": lambda rng: (*random_triclinic(rng, 5, 4.5), (True, True, True), 4.5),
    "skewed_2": lambda rng: (rng.uniform(0, 1, (2, 3)) @ SKEWED, SKEWED, (True, True, True), 3.0),
    "one_atom_long_cutoff": lambda rng: (rng.normal(size=(1, 3)), np.diag([2.0, 2.5, 1.8]) + 0.3, (True,) * 3, 6.0),
    "one_atom_skewed": lambda rng: (np.zeros((1, 3)), SKEWED * 0.5, (True, True, True), 4.0),
    "slab_TTF": lambda rng: (*random_triclinic(rng, 4), (True, True, False), 5.0),
    "wire_FTF_zero_vectors": lambda rng: (
        rng.normal(scale=2.0, size=(3, 3)), np.array([[0, 0, 0], [0.5, 2.5, 0.2], [0, 0, 0.0]]), (False, True, False), 4.0
    ),
    "molecule_FFF": lambda rng: (rng.normal(scale=1.5, size=(4, 3)), np.zeros((3, 3)), (False, False, False), 3.0),
}


@pytest.mark.parametrize("backend", ["pymatgen", "vesin", "numpy"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_radius_edges_match_brute_force(case: str, backend: str) -> None:
    rng = np.random.default_rng(sorted(CASES).index(case))
    pos, cell, pbc, cutoff = CASES[case](rng)
    g = build_graph(pos, cell, pbc, cutoff=cutoff, max_neighbors=None, self_images="none", backend=backend)
    check_format(g, len(pos))
    expected = brute_force(pos, cell, pbc, cutoff)
    got = edge_dict(g, pos, cell)
    assert set(got) == set(expected)
    assert np.allclose([got[k] for k in expected], list(expected.values()), atol=1e-10)
    if case.startswith("one_atom"):
        assert len(expected) > 20 and all(k[0] == k[1] == 0 for k in expected)


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True)])
def test_backends_agree_on_a_larger_cell(pbc) -> None:
    rng = np.random.default_rng(5)
    pos, cell = random_triclinic(rng, 24, scale=7.0)
    graphs = {
        b: build_graph(pos, cell, pbc, max_neighbors=None, self_images="none", backend=b)
        for b in ("pymatgen", "vesin", "numpy")
    }
    dicts = {b: edge_dict(g, pos, cell) for b, g in graphs.items()}
    assert len(dicts["numpy"]) > 24 * 20
    assert set(dicts["pymatgen"]) == set(dicts["vesin"]) == set(dicts["numpy"])
    # with the default shell mode the kept edge set does not depend on the backend either
    kept = {b: set(edge_dict(build_graph(pos, cell, pbc, max_neighbors=12, backend=b), pos, cell)) for b in graphs}
    assert kept["pymatgen"] == kept["vesin"] == kept["numpy"]


@pytest.mark.parametrize("case", ["triclinic_5", "one_atom_long_cutoff", "slab_TTF"])
@pytest.mark.parametrize("shell_tolerance", [None, 0.05])
def test_nearest_k_against_brute_force(case: str, shell_tolerance) -> None:
    rng = np.random.default_rng(7)
    pos, cell, pbc, cutoff = CASES[case](rng)
    k_max = 9
    g = build_graph(pos, cell, pbc, cutoff=cutoff, max_neighbors=k_max, shell_tolerance=shell_tolerance)
    check_format(g, len(pos))
    full = brute_force(pos, cell, pbc, cutoff)
    got = edge_dict(g, pos, cell)
    assert set(got) <= set(full)
    for i in range(len(pos)):
        all_d = np.sort([d for key, d in full.items() if key[0] == i])
        kept = np.sort([d for key, d in got.items() if key[0] == i])
        if shell_tolerance is None:
            assert len(kept) == min(k_max, len(all_d))
            assert np.allclose(kept, all_d[: len(kept)])
        else:
            limit = all_d[k_max - 1] + shell_tolerance if len(all_d) > k_max else np.inf
            assert np.allclose(kept, all_d[all_d <= limit])


def fcc_conventional(a: float = 4.0):
    frac = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    cell = np.eye(3) * a
    return frac @ cell, cell


def test_fcc_shell_kept_whole_and_strict_cut() -> None:
    pos, cell = fcc_conventional()
    full = build_graph(pos, cell, max_neighbors=None, self_images="none")
    strict = build_graph(pos, cell, shell_tolerance=None, self_images="none")
    shell = build_graph(pos, cell, self_images="none")  # default: 50 with shell tolerance 0.01
    assert np.all(np.bincount(full.edge_index[1]) == 54)
    assert np.all(np.bincount(strict.edge_index[1]) == 50)
    assert np.all(np.bincount(shell.edge_index[1]) == 54)
    for i in range(4):
        d = np.sort(list(v for k, v in edge_dict(strict, pos, cell).items() if k[0] == i))
        # 12 + 6 + 24 complete shells, then 8 of the 12 at a*sqrt(2) = 5.657 A
        assert np.isclose(d[-1], 4.0 * np.sqrt(2)) and np.sum(np.isclose(d, 4.0 * np.sqrt(2))) == 8


def test_fcc_primitive_one_atom_keeps_symmetric_shells() -> None:
    a = 4.0
    cell = np.array([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
    g = build_graph(np.zeros((1, 3)), cell, self_images="none")
    assert g.num_edges == 54
    vec = g.cell_offsets @ cell
    assert np.allclose(vec.sum(axis=0), 0.0)  # whole shells: inversion-symmetric star


@pytest.mark.parametrize("mode,expected", [
    ("positive", POSITIVE),
    ("symmetric", POSITIVE + [tuple(-x for x in o) for o in POSITIVE]),
    ("none", []),
])
def test_self_image_edges(mode: str, expected: list) -> None:
    rng = np.random.default_rng(3)
    pos, cell = random_triclinic(rng, 3, scale=9.0)  # self images longer than the cutoff
    g = build_graph(pos, cell, cutoff=2.5, self_images=mode)
    check_format(g, 3)
    m = g.edge_type == keys.EDGE_SELF_IMAGE
    assert np.all(g.edge_index[0, m] == g.edge_index[1, m])
    for i in range(3):
        offs = [tuple(o) for o in g.cell_offsets[m & (g.edge_index[1] == i)]]
        assert offs == expected
    # radius edges are unchanged by the self-image setting
    base = build_graph(pos, cell, cutoff=2.5, self_images="none")
    assert edge_dict(g, pos, cell) == edge_dict(base, pos, cell)


def test_self_images_only_along_periodic_directions() -> None:
    pos, cell = fcc_conventional()
    g = build_graph(pos, cell, (True, False, True), cutoff=3.0, self_images="symmetric")
    offs = g.cell_offsets[g.edge_type == keys.EDGE_SELF_IMAGE]
    assert len(offs) == 4 * 6 and np.all(offs[:, 1] == 0)
    assert np.all(g.cell_offsets[:, 1] == 0)


def test_in_radius_self_images_switch() -> None:
    pos, cell = np.zeros((1, 3)), np.eye(3) * 2.0
    kept = build_graph(pos, cell, cutoff=3.0, self_images="none")  # 6 at 2.0, 12 at 2.83
    assert kept.num_edges == 6 + 12 and np.all(kept.edge_index == 0)
    dropped = build_graph(pos, cell, cutoff=3.0, radius_self_images=False)
    assert np.all(dropped.edge_type == keys.EDGE_SELF_IMAGE) and dropped.num_edges == 6


def test_translation_keeps_edge_vectors() -> None:
    rng = np.random.default_rng(11)
    pos, cell = random_triclinic(rng, 4)

    def vectors(p):
        g = build_graph(p, cell, cutoff=4.0, max_neighbors=None, self_images="none")
        j, i = g.edge_index
        v = p[j] + g.cell_offsets @ cell - p[i]
        return sorted((int(a), int(b), *np.round(x, 8)) for a, b, x in zip(i, j, v))

    assert vectors(pos) == vectors(pos + np.array([13.1, -7.7, 2.2]))


# ----------------------------------------------------------------------------- paper faithful
def reference_loop(pos, cell, pbc, radius=6.0, max_neigh=50):
    """The reference algorithm written out: AseAtomsAdaptor, per-atom nonzero + argsort loop."""
    from ase import Atoms
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = Atoms(["Cu"] * len(pos), positions=pos, cell=cell, pbc=pbc)
    struct = AseAtomsAdaptor.get_structure(atoms)
    c, n, off, d = struct.get_neighbor_list(r=radius, numerical_tol=0, exclude_self=True)
    idx = np.concatenate([np.flatnonzero(c == i)[np.argsort(d[c == i])[:max_neigh]] for i in range(len(pos))])
    c, n, off = c[idx], n[idx], np.asarray(off, dtype=np.int64)[idx]
    keep = n != c
    edges = [(int(a), int(b), *map(int, o)) for a, b, o in zip(c[keep], n[keep], off[keep])]
    edges += [(i, i, *o) for i in range(len(pos)) for o in POSITIVE]
    return edges


def as_list(g: GraphEdges) -> list[tuple]:
    return [(int(i), int(j), *map(int, o)) for j, i, o in zip(*g.edge_index, g.cell_offsets)]


def test_paper_faithful_fcc() -> None:
    pos, cell = fcc_conventional()
    g = build_graph(pos, cell, paper_faithful=True)
    check_format(g, 4)
    radius = g.edge_type == keys.EDGE_RADIUS
    assert not np.any(g.edge_index[0, radius] == g.edge_index[1, radius])  # no in-radius self images
    # 50 strict: 12 + 6 (self, 4.0 A) + 24 + 8 of 12 (self, 5.66 A); self images removed -> 36
    assert np.all(np.bincount(g.edge_index[1, radius]) == 36)
    for i in range(4):
        m = ~radius & (g.edge_index[1] == i)
        assert [tuple(o) for o in g.cell_offsets[m]] == POSITIVE
        assert np.all(g.edge_index[0, m] == i)
    assert sorted(as_list(g)) == sorted(reference_loop(pos, cell, (True,) * 3))


@pytest.mark.parametrize("seed,pbc", [(0, (True, True, True)), (1, (True, True, True)), (2, (True, True, False))])
def test_paper_faithful_matches_reference_loop(seed: int, pbc) -> None:
    rng = np.random.default_rng(seed)
    pos, cell = random_triclinic(rng, 6, scale=4.0)
    g = GRAPHS.build({"name": "periodic_multi_edge", "paper_faithful": True})(pos, cell, pbc)
    ref = reference_loop(pos, cell, pbc)
    got = as_list(g)
    assert sorted(got) == sorted(ref)
    assert np.all(np.bincount(g.edge_index[1][g.edge_type == keys.EDGE_RADIUS]) <= 50)
    # same per-centre order as the reference (its self-image edges come last overall)
    for i in range(len(pos)):
        assert [e for e in got if e[0] == i] == [e for e in ref if e[0] == i]


def test_paper_faithful_params_report_reference_settings() -> None:
    b = PeriodicMultiEdgeGraph(paper_faithful=True, shell_tolerance=0.5, self_images="symmetric")
    p = b.params()
    assert p["shell_tolerance"] is None and p["self_images"] == "positive" and p["radius_self_images"] is False
    assert (p["cutoff"], p["max_neighbors"]) == (6.0, 50)


# ----------------------------------------------------------------------------- registry and errors
def test_registry_build_and_params_round_trip() -> None:
    b = GRAPHS.build({"name": "periodic_multi_edge", "cutoff": 5.0, "self_images": "symmetric"})
    assert isinstance(b, PeriodicMultiEdgeGraph)
    p = json.loads(json.dumps(b.params()))
    assert p == {
        "name": "periodic_multi_edge", "cutoff": 5.0, "max_neighbors": 50, "shell_tolerance": 0.01,
        "radius_self_images": True, "self_images": "symmetric", "paper_faithful": False, "backend": "pymatgen",
    }
    assert GRAPHS.build(p).params() == p
    pos, cell = fcc_conventional()
    g1, g2 = b(pos, cell, (True,) * 3), GRAPHS.build(p)(pos, cell, (True,) * 3)
    assert np.array_equal(g1.edge_index, g2.edge_index) and np.array_equal(g1.cell_offsets, g2.cell_offsets)


def test_default_settings() -> None:
    p = PeriodicMultiEdgeGraph().params()
    assert (p["cutoff"], p["max_neighbors"], p["shell_tolerance"], p["self_images"]) == (6.0, 50, 0.01, "positive")
    assert p["radius_self_images"] is True and p["paper_faithful"] is False


def test_empty_structure() -> None:
    g = build_graph(np.zeros((0, 3)), np.eye(3) * 3)
    check_format(g, 0)
    assert g.num_edges == 0


@pytest.mark.parametrize("kwargs,message", [
    ({"cutoff": 0.0}, "cutoff must be positive, got 0.0"),
    ({"max_neighbors": 0}, "max_neighbors must be a positive integer or None, got 0"),
    ({"self_images": "both"}, "self_images must be one of positive, symmetric, none, got 'both'"),
    ({"backend": "ase"}, "backend must be one of pymatgen, vesin, numpy, got 'ase'"),
])
def test_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        PeriodicMultiEdgeGraph(**kwargs)
    assert str(exc.value) == message


def test_unknown_setting_names_component() -> None:
    with pytest.raises(RegistryError, match="unknown keyword\\(s\\) radius; accepted: backend, cutoff"):
        GRAPHS.build({"name": "periodic_multi_edge", "radius": 6.0})


@pytest.mark.parametrize("pos,cell,pbc,message", [
    (np.zeros((2, 2)), np.eye(3), (True,) * 3, "pos must have shape [N, 3], got [2, 2]"),
    (np.zeros((2, 3)), np.eye(2), (True,) * 3, "cell must have shape [3, 3] (rows = lattice vectors), got [2, 2]"),
    (np.zeros((2, 3)), np.eye(3), (True, True), "pbc must have 3 entries, got shape [2]"),
    (np.full((2, 3), np.nan), np.eye(3), (True,) * 3, "pos contains NaN or infinite values"),
    (np.zeros((2, 3)), np.diag([1.0, 1.0, 0.0]), (True,) * 3,
     "cell is degenerate along the periodic directions [0, 1, 2]: the periodic lattice vectors must be "
     "linearly independent and non-zero"),
])
def test_bad_structure(pos, cell, pbc, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        build_graph(pos, cell, pbc)
    assert str(exc.value) == message
