"""Records: structure pair -> record -> PyG Data -> Batch, with brute-force graph checks."""
from __future__ import annotations

import io
import itertools
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from scipy.spatial.transform import Rotation

from e3relax import keys
from e3relax.geometry import edge_vectors
from e3relax.graph.base import GraphEdges
from e3relax.records import collate, make_record, record_to_data, structure_to_data
from e3relax.structures import PairValidationError, min_periodic_distance


def brute_graph(cutoff: float = 3.5, reach: int = 2):
    """Every (j, image) within cutoff of i, by enumeration of images; no self-image edges."""

    def build(pos, cell, pbc=(True, True, True)):
        src, dst, off = [], [], []
        for k in itertools.product(range(-reach, reach + 1), repeat=3):
            shift = np.array(k) @ cell
            d = np.linalg.norm(pos[None, :, :] + shift - pos[:, None, :], axis=-1)  # [i, j]
            for i, j in zip(*np.nonzero(d < cutoff)):
                if i == j and k == (0, 0, 0):
                    continue
                src.append(j), dst.append(i), off.append(k)
        ei = np.array([src, dst], dtype=np.int64).reshape(2, -1)
        order = np.argsort(ei[1], kind="stable")
        return GraphEdges(ei[:, order], np.array(off, dtype=np.int64).reshape(-1, 3)[order],
                          np.zeros(len(src), dtype=np.int64))

    return build


def make_pair(seed: int, n: int):
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(3.5, 4.5, 3)) + rng.uniform(-0.5, 0.5, (3, 3))
    while True:
        u = Atoms(numbers=rng.integers(1, 20, n), scaled_positions=rng.random((n, 3)), cell=cell, pbc=True)
        if min_periodic_distance(u.positions, cell, u.pbc, 1.2) > 1.1:
            break
    r = u.copy()
    e = rng.uniform(-0.03, 0.03, (3, 3))
    r.set_cell(cell @ (np.eye(3) + (e + e.T) / 2), scale_atoms=True)
    r.positions += rng.normal(scale=0.05, size=(n, 3))
    return u, r


def test_make_record_fields_unwrap_and_rotation():
    u, r = make_pair(0, 4)
    q = Rotation.from_rotvec([0.0, 0.2, 0.1]).as_matrix()
    target_pos, target_cell = r.positions.copy(), r.cell.array.copy()
    rot = r.copy()
    rot.set_cell(r.cell.array @ q.T, scale_atoms=True)  # rigid rotation of the relaxed frame
    rot.positions[1] += 2 * rot.cell.array[0] - rot.cell.array[2]  # wrapped by lattice vectors
    rec, warnings = make_record(u, rot, "mp-7", brute_graph(), energy=-1.5)
    assert warnings == []
    assert rec[keys.ID] == "mp-7" and rec[keys.ENERGY] == -1.5
    assert rec[keys.ROTATION_REMOVED] == pytest.approx(math.degrees(np.linalg.norm([0, 0.2, 0.1])), abs=1e-9)
    np.testing.assert_allclose(rec[keys.CELL_R], target_cell, atol=1e-10)
    np.testing.assert_allclose(rec[keys.POS_R], target_pos, atol=1e-10)  # de-rotated and unwrapped
    for k, dt, shape in [(keys.POS_U, np.float64, (4, 3)), (keys.CELL_U, np.float64, (3, 3)),
                         (keys.Z, np.int64, (4,)), (keys.PBC, np.bool_, (3,))]:
        assert rec[k].dtype == dt and rec[k].shape == shape, k
    g = brute_graph()(u.positions, u.cell.array)  # built on the unrelaxed structure
    np.testing.assert_array_equal(rec[keys.EDGE_INDEX], g.edge_index)
    np.testing.assert_array_equal(rec[keys.CELL_OFFSETS], g.cell_offsets)
    assert keys.TRAJ_POS not in rec

    raw, _ = make_record(u, rot, "mp-7", brute_graph(), keep_frame=True)
    np.testing.assert_allclose(raw[keys.CELL_R], rot.cell.array, atol=1e-12)
    assert raw[keys.ROTATION_REMOVED] == 0.0 and keys.ENERGY not in raw


def test_trajectory_frames_are_derotated_and_unwrapped():
    u, r = make_pair(1, 3)
    q = Rotation.from_rotvec([0.1, 0.0, -0.3]).as_matrix()
    rot = r.copy()
    rot.set_cell(r.cell.array @ q.T, scale_atoms=True)
    mid = u.copy()
    mid.positions[0] += u.cell.array[1]
    rec, _ = make_record(u, rot, "t", brute_graph(), trajectory=[mid, rot])
    assert rec[keys.TRAJ_POS].shape == (3, 2, 3) and rec[keys.TRAJ_CELL].shape == (2, 3, 3)
    np.testing.assert_allclose(rec[keys.TRAJ_POS][:, 0], u.positions, atol=1e-10)
    np.testing.assert_allclose(rec[keys.TRAJ_POS][:, -1], rec[keys.POS_R], atol=1e-10)
    np.testing.assert_allclose(rec[keys.TRAJ_CELL][-1], rec[keys.CELL_R], atol=1e-10)
    arrays = (np.stack([mid.positions, rot.positions]), np.stack([mid.cell.array, rot.cell.array]))
    rec2, _ = make_record(u, rot, "t", brute_graph(), trajectory=arrays)
    np.testing.assert_allclose(rec2[keys.TRAJ_POS], rec[keys.TRAJ_POS], atol=1e-12)
    with pytest.raises(PairValidationError, match="structure 't': trajectory frame 1 has 2 atoms, not 3"):
        make_record(u, rot, "t", brute_graph(), trajectory=[mid, mid[:2]])
    reordered = mid.copy()
    reordered.numbers[0] += 1
    with pytest.raises(PairValidationError, match="structure 't': trajectory frame 0 has a different species"):
        make_record(u, rot, "t", brute_graph(), trajectory=[reordered])


def test_trajectory_is_continuous_and_ends_at_the_label_image():
    cell = np.diag([4.0, 4.0, 4.0])
    u = Atoms("HeNe", positions=[[0.5, 1.0, 1.0], [2.0, 3.0, 3.0]], cell=cell, pbc=True)
    frames = []
    for x in np.arange(0.5, 2.61, 0.3):  # atom 0 drifts past half a cell away from its start
        f = u.copy()
        f.positions[0, 0] = x
        frames.append(f)
    rec, _ = make_record(u, frames[-1], "drift", brute_graph(), trajectory=frames)
    np.testing.assert_allclose(rec[keys.POS_R][0], [-1.4, 1.0, 1.0], atol=1e-12)  # nearest image of pos_u
    path = rec[keys.TRAJ_POS]
    assert np.linalg.norm(np.diff(path, axis=1), axis=-1).max() == pytest.approx(0.3)  # no lattice jumps
    np.testing.assert_allclose(path[:, -1], rec[keys.POS_R], atol=1e-12)
    np.testing.assert_allclose(path[0, 0], [-3.5, 1.0, 1.0], atol=1e-12)  # shifted by -a as a whole


def test_errors_name_the_structure():
    u, r = make_pair(2, 3)
    r.numbers[0] = 26 if r.numbers[0] != 26 else 27
    with pytest.raises(PairValidationError) as exc:
        make_record(u, r, "oqmd-42", brute_graph())
    assert str(exc.value).startswith("structure 'oqmd-42': species sequences differ, first at atom 0")

    def bad_graph(pos, cell, pbc):
        return GraphEdges(np.array([[0], [9]]), np.zeros((1, 3), dtype=np.int64), np.zeros(1, dtype=np.int64))

    with pytest.raises(ValueError, match="structure 'g1': graph builder returned atom indices outside 0..2"):
        make_record(u, None, "g1", bad_graph)
    with pytest.raises(KeyError, match="structure 'x': record has no field 'cell_u'"):
        record_to_data({keys.ID: "x", keys.POS_U: np.zeros((1, 3))})


def test_record_to_data_shapes_and_tensor_input():
    u, r = make_pair(3, 2)
    rec, _ = make_record(u, r, "a", brute_graph(), trajectory=[u, r])
    d = record_to_data(rec)
    e = rec[keys.EDGE_INDEX].shape[1]
    assert d.num_nodes == 2 and d[keys.ID] == "a"
    assert d[keys.CELL_U].shape == (1, 3, 3) and d[keys.CELL_R].shape == (1, 3, 3)
    assert d[keys.POS_U].dtype == torch.float32 and d[keys.Z].dtype == torch.long
    assert d[keys.NATOMS].tolist() == [2] and d[keys.PBC].shape == (1, 3) and d[keys.PBC].dtype == torch.bool
    assert d[keys.EDGE_INDEX].shape == (2, e) and d[keys.CELL_OFFSETS].shape == (e, 3)
    assert d[keys.TRAJ_POS].shape == (2, 2, 3) and d[keys.TRAJ_CELL].shape == (1, 2, 3, 3)
    assert math.isnan(float(d[keys.ENERGY])) and d[keys.ROTATION_REMOVED].shape == (1,)
    as_tensors = {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v) for k, v in rec.items()}
    d2 = record_to_data(as_tensors, dtype=torch.float64)  # what a codec reading torch.save gives back
    torch.testing.assert_close(d2[keys.POS_R], torch.as_tensor(rec[keys.POS_R]))


def test_collate_three_structures_matches_one_by_one():
    graph = brute_graph()
    recs = [make_record(*make_pair(10 + s, n), f"s{s}", graph, energy=float(s))[0]
            for s, n in enumerate((2, 3, 4))]
    data = [record_to_data(r, dtype=torch.float64) for r in recs]
    batch = collate(data)
    assert batch.num_graphs == 3
    assert batch[keys.BATCH].tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert batch[keys.CELL_U].shape == (3, 3, 3) and batch[keys.PBC].shape == (3, 3)
    assert batch[keys.NATOMS].tolist() == [2, 3, 4] and batch[keys.ENERGY].tolist() == [0.0, 1.0, 2.0]
    assert batch[keys.ID] == ["s0", "s1", "s2"]
    starts = [0, 2, 5]
    expected_ei = torch.cat([d[keys.EDGE_INDEX] + s for d, s in zip(data, starts)], dim=1)
    torch.testing.assert_close(batch[keys.EDGE_INDEX], expected_ei)
    torch.testing.assert_close(batch[keys.POS_R], torch.cat([d[keys.POS_R] for d in data]))
    vec, dist = edge_vectors(batch[keys.POS_U], batch[keys.CELL_U], batch[keys.EDGE_INDEX],
                             batch[keys.CELL_OFFSETS], batch[keys.BATCH])
    single = [edge_vectors(d[keys.POS_U], d[keys.CELL_U], d[keys.EDGE_INDEX], d[keys.CELL_OFFSETS],
                           torch.zeros(d.num_nodes, dtype=torch.long))[0] for d in data]
    torch.testing.assert_close(vec, torch.cat(single))
    assert float(dist.max()) < 3.5 and float(dist.min()) > 1.0  # the brute-force cutoff, on real vectors


def test_structure_to_data_and_mixed_collate_error():
    u, r = make_pair(4, 3)
    pred = structure_to_data(u, brute_graph(), sid="user.cif")
    assert keys.POS_R not in pred and keys.CELL_R not in pred and pred[keys.ID] == "user.cif"
    labelled = record_to_data(make_record(u, r, "lab", brute_graph())[0])
    with pytest.raises(ValueError, match="collate: structures 'user.cif' and 'lab' carry different fields"):
        collate([pred, labelled])
    batch = collate([pred, pred])
    assert batch[keys.EDGE_INDEX].max() == 5


def test_with_the_registered_graph_builder():
    from e3relax.registry import GRAPHS

    assert "periodic_multi_edge" in GRAPHS, f"default graph builder not registered; GRAPHS has {GRAPHS.names()}"
    graph = GRAPHS.build({"name": "periodic_multi_edge", "cutoff": 3.5, "max_neighbors": 50})
    data = [record_to_data(make_record(*make_pair(20 + s, n), f"g{s}", graph)[0], dtype=torch.float64)
            for s, n in enumerate((2, 4))]
    batch = collate(data)
    vec, dist = edge_vectors(batch[keys.POS_U], batch[keys.CELL_U], batch[keys.EDGE_INDEX],
                             batch[keys.CELL_OFFSETS], batch[keys.BATCH])
    radius = batch[keys.EDGE_TYPE] == keys.EDGE_RADIUS
    assert bool(radius.any()) and float(dist[radius].max()) <= 3.5 + 1e-9
    single = [edge_vectors(d[keys.POS_U], d[keys.CELL_U], d[keys.EDGE_INDEX], d[keys.CELL_OFFSETS],
                           torch.zeros(d.num_nodes, dtype=torch.long))[0] for d in data]
    torch.testing.assert_close(vec, torch.cat(single))


# --- real data (skipped where ../shared/data is absent) ------------------------------------------

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _read_tar(path: Path, wanted: set[str] | None, limit: int) -> dict[str, Atoms]:
    from ase.io import read

    out = {}
    with tarfile.open(path) as tar:
        for m in tar:
            name = m.name.rsplit("/", 1)[-1]
            if m.isfile() and (name in wanted if wanted is not None else len(out) < limit):
                out[name] = read(io.StringIO(tar.extractfile(m).read().decode()), format="vasp")
    return out


def test_real_pnictide_pairs():
    root = DATA / "pnictides"
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}")
    unrelaxed = _read_tar(root / "unrelaxed_hypothetical_structures.tar.gz", None, 25)
    extra = {"POSCAR_CdAs2", "POSCAR_BeAs2_009481_sg180"}  # an atom-count and a species mismatch
    unrelaxed.update(_read_tar(root / "unrelaxed_hypothetical_structures.tar.gz", extra, 0))
    relaxed = _read_tar(root / "relaxed_hypothetical_structures.tar.gz", set(unrelaxed), 0)
    codes = {}
    for sid, u in unrelaxed.items():
        try:
            rec, _ = make_record(u, relaxed[sid], sid, brute_graph(cutoff=1.0, reach=1))
        except PairValidationError as exc:
            codes[sid] = exc.code
            continue
        f = np.linalg.solve(rec[keys.CELL_U], rec[keys.CELL_R])
        np.testing.assert_allclose(f, f.T, atol=1e-8)  # no rotation left: F is a pure strain
        raw = relaxed[sid].cell.array
        np.testing.assert_allclose(rec[keys.CELL_R] @ rec[keys.CELL_R].T, raw @ raw.T, atol=1e-8)
    assert codes.get("POSCAR_CdAs2") == "atom_count" and codes.get("POSCAR_BeAs2_009481_sg180") == "species"


def test_real_srnbh_trajectory():
    from ase.io import read

    folders = sorted((DATA / "srnbh" / "raw_dft").glob("*/XDATCAR"))[:4]
    if not folders:
        pytest.skip(f"real data not found at {DATA / 'srnbh'}")
    for xdatcar in folders:
        d = xdatcar.parent
        u, r = read(d / "MP_inputs" / "OG_POSCAR", format="vasp"), read(d / "CONTCAR", format="vasp")
        traj = read(xdatcar, index=":", format="vasp-xdatcar")
        rec, _ = make_record(u, r, d.name, brute_graph(cutoff=1.0, reach=1), trajectory=traj)
        path = rec[keys.TRAJ_POS]
        assert np.linalg.norm(np.diff(path, axis=1), axis=-1).max() < 1.0, d.name
        np.testing.assert_allclose(path[:, -1], rec[keys.POS_R], atol=1e-4)  # XDATCAR has 8 digits


def test_tags_and_fixed_atoms_are_kept():
    """OC22-style tags and FixAtoms constraints travel into the record and the batch."""
    from ase import Atoms
    from ase.constraints import FixAtoms

    from e3relax.records import collate, make_record, record_to_data
    from e3relax.registry import GRAPHS

    atoms = Atoms("Cu3O", positions=[[0, 0, 0], [1.8, 0, 0], [0, 1.8, 0], [0.9, 0.9, 1.5]],
                  cell=[[3.6, 0, 0], [0, 3.6, 0], [0, 0, 9.0]], pbc=True)
    atoms.set_tags([0, 1, 1, 2])
    atoms.set_constraint(FixAtoms(indices=[0]))
    relaxed = atoms.copy()
    relaxed.positions[3] += [0.0, 0.0, 0.2]
    graph = GRAPHS.build({"name": "periodic_multi_edge", "cutoff": 4.0})
    rec, _ = make_record(atoms, relaxed, "oc", graph)
    np.testing.assert_array_equal(rec[keys.TAGS], [0, 1, 1, 2])
    np.testing.assert_array_equal(rec[keys.FIXED], [True, False, False, False])
    plain, _ = make_record(Atoms("Cu", cell=np.eye(3) * 2.5, pbc=True), None, "cu", graph)
    assert keys.TAGS not in plain and keys.FIXED not in plain
    batch = collate([record_to_data(rec), record_to_data(rec)])
    assert batch[keys.TAGS].tolist() == [0, 1, 1, 2] * 2
    assert batch[keys.FIXED].sum().item() == 2
