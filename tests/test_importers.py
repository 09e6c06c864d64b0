"""Importers for the published layouts, each on a small fixture written in its exact layout."""
from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from data_fixtures import write_poscar_pairs, write_vasp_dirs
from e3relax.datasets.importers.base import RawPair, Skipped
from e3relax.registry import IMPORTERS
from e3relax.testing import ImporterTests


def make_pair(seed: int, n_rep: int = 1, pbc=True) -> tuple[Atoms, Atoms]:
    """A small rock-salt cell (2 atoms per repeat) and a strained, rattled 'relaxed' partner."""
    rng = np.random.default_rng(seed)
    a = 5.6 + 0.1 * seed
    u = Atoms("NaCl" * n_rep, scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]] * n_rep,
              cell=0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]]), pbc=pbc)
    if n_rep > 1:
        u.positions[2:] += 0.3
    r = u.copy()
    r.set_cell(u.cell.array @ (np.eye(3) + 0.02 * rng.standard_normal((3, 3))), scale_atoms=True)
    r.positions += 0.05 * rng.standard_normal(r.positions.shape)
    return u, r


def items(importer) -> tuple[dict, dict]:
    got = list(importer)
    pairs = {i.id: i for i in got if isinstance(i, RawPair)}
    skipped = {i.id: i for i in got if isinstance(i, Skipped)}
    assert len(pairs) + len(skipped) == len(got)
    return pairs, skipped


def assert_same(a: Atoms, b: Atoms, atol: float = 2e-3) -> None:
    assert list(a.numbers) == list(b.numbers)
    np.testing.assert_allclose(a.cell.array, b.cell.array, atol=atol)
    np.testing.assert_allclose(a.positions, b.positions, atol=atol)


def assert_same_cif(a: Atoms, b: Atoms, atol: float = 2e-3) -> None:
    """CIF stores cell parameters, not orientation: compare lengths, angles and fractional positions."""
    assert list(a.numbers) == list(b.numbers)
    np.testing.assert_allclose(a.cell.cellpar(), b.cell.cellpar(), atol=atol)
    d = a.get_scaled_positions(wrap=False) - b.get_scaled_positions(wrap=False)
    np.testing.assert_allclose(d - np.round(d), 0.0, atol=atol)


def test_all_layouts_registered():
    for name in ("xmno", "mp", "mpf_pickle", "c2db", "custom", "legacy_lmdb", "extxyz", "builtin", "poscar_pairs",
                 "vasp_dirs"):
        assert name in IMPORTERS


# ------------------------------------------------------------------ poscar_pairs, vasp_dirs (test kit mixin)
class TestPoscarPairsTarballs(ImporterTests):
    importer = "poscar_pairs"

    def write_layout(self, root):
        return write_poscar_pairs(root, as_tarballs=True)


class TestPoscarPairsFolders(ImporterTests):
    importer = "poscar_pairs"

    def write_layout(self, root):
        return write_poscar_pairs(root, as_tarballs=False, seed=3)


class TestVaspDirs(ImporterTests):
    importer = "vasp_dirs"

    def write_layout(self, root):
        return write_vasp_dirs(root)


class TestVaspDirsTrajectories(ImporterTests):
    importer = "vasp_dirs"
    options = {"trajectory": True, "num_frames": 3}

    def write_layout(self, root):
        return write_vasp_dirs(root, seed=5)


# ------------------------------------------------------------------ xmno
def test_xmno(tmp_path):
    pairs = {f"mp-{k}_pox_mn_ba": make_pair(k) for k in range(3)}
    for base, (u, r) in pairs.items():
        write(tmp_path / f"{base}_unrelaxed.cif", u)
        write(tmp_path / f"{base}_relaxed.cif", r)
    (tmp_path / "mp-2_pox_mn_ba_relaxed.cif").unlink()                  # missing partner
    (tmp_path / "mp-9_x_unrelaxed.cif").write_text("data_broken\n_cell_length_a oops\n")
    (tmp_path / "mp-9_x_relaxed.cif").write_text("not a cif")
    (tmp_path / "id_prop_train_all.csv").write_text(
        "mp-0_pox_mn_ba_unrelaxed,0.5\nmp-0_pox_mn_ba_relaxed,-1.25\nmp-9_x_relaxed,-2\n")
    (tmp_path / "id_prop_val_all.csv").write_text("mp-1_pox_mn_ba_relaxed,-0.75\n")
    (tmp_path / "id_prop_test_all.csv").write_text("mp-2_pox_mn_ba_relaxed,-3\n")
    got, skipped = items(IMPORTERS.get("xmno")(tmp_path))
    assert sorted(got) == ["mp-0_pox_mn_ba", "mp-1_pox_mn_ba"]
    assert got["mp-0_pox_mn_ba"].energy == -1.25 and got["mp-0_pox_mn_ba"].split == "train"
    assert got["mp-1_pox_mn_ba"].split == "val"
    assert_same_cif(got["mp-1_pox_mn_ba"].unrelaxed, pairs["mp-1_pox_mn_ba"][0])
    assert_same_cif(got["mp-1_pox_mn_ba"].relaxed, pairs["mp-1_pox_mn_ba"][1])
    assert skipped["mp-2_pox_mn_ba"].code == "missing_partner"
    assert "mp-2_pox_mn_ba_relaxed.cif" in skipped["mp-2_pox_mn_ba"].reason
    assert skipped["mp-9_x"].code == "unreadable" and "mp-9_x_unrelaxed.cif" in skipped["mp-9_x"].reason


def test_xmno_requires_split_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="id_prop_"):
        IMPORTERS.get("xmno")(tmp_path)


# ------------------------------------------------------------------ mp (CIF layout and raw pickles)
def test_mp_cif_layout(tmp_path):
    (tmp_path / "CIF").mkdir()
    for k, mp_id in enumerate(["mp-1", "mp-22", "mp-333"]):
        u, r = make_pair(k)
        write(tmp_path / "CIF" / f"{mp_id}_U.cif", u)
        if mp_id != "mp-333":
            write(tmp_path / "CIF" / f"{mp_id}_R.cif", r)
    (tmp_path / "train.csv").write_text(",mp_id,formula\n0,mp-1,NaCl\n1,mp-333,NaCl\n")
    (tmp_path / "val.csv").write_text(",mp_id,formula\n0,mp-22,NaCl\n")
    (tmp_path / "test.csv").write_text(",mp_id,formula\n")
    got, skipped = items(IMPORTERS.get("mp")(tmp_path))
    assert {k: v.split for k, v in got.items()} == {"mp-1": "train", "mp-22": "val"}
    assert_same_cif(got["mp-22"].relaxed, make_pair(1)[1])
    assert skipped["mp-333"].code == "missing_partner"


def _mpf_block(path, materials):
    from pymatgen.io.ase import AseAtomsAdaptor

    data = {}
    for mp_id, frames, ids in materials:
        data[mp_id] = {
            "structure": [AseAtomsAdaptor.get_structure(f) for f in frames],
            "energy": [-3.0 * len(f) - k for k, f in enumerate(frames)],
            "force": [np.zeros((len(f), 3)).tolist() for f in frames],
            "stress": [np.zeros((3, 3)).tolist() for f in frames],
            "id": ids,
        }
    with open(path, "wb") as fh:
        pickle.dump(data, fh)


def test_mpf_pickle_first_of_first_to_last_of_last(tmp_path):
    u, r = make_pair(0)
    mid = u.copy()
    mid.positions += 0.01
    # snapshots stored out of order: (calc 1, step 0) is last, (calc 0, step 0) is first
    _mpf_block(tmp_path / "block_0.p", [("mp-7", [mid, r, u], ["mp-7-0-1", "mp-7-1-0", "mp-7-0-0"])])
    _mpf_block(tmp_path / "block_1.p", [("mp-8", [u, r], ["a", "b"])])
    (tmp_path / "block_2.p").write_bytes(b"not a pickle")
    (tmp_path / "test.csv").write_text("mp_id\nmp-8\n")
    with pytest.raises(PermissionError, match="unpickling Python objects, which can run arbitrary code"):
        IMPORTERS.get("mpf_pickle")(tmp_path)
    imp = IMPORTERS.get("mpf_pickle")(tmp_path, trust_pickle=True, keep_trajectory=True)
    got, skipped = items(imp)
    assert_same(got["mp-7"].unrelaxed, u, atol=1e-9)
    assert_same(got["mp-7"].relaxed, r, atol=1e-9)
    assert got["mp-7"].energy == pytest.approx((-6.0 - 1) / 2)  # energy of snapshot "mp-7-1-0" per atom
    assert len(got["mp-7"].trajectory) == 3 and got["mp-7"].split is None
    assert got["mp-8"].split == "test" and got["mp-8"].trajectory is not None
    assert skipped["block_2.p"].code == "unreadable"


# ------------------------------------------------------------------ c2db
def test_c2db_databases(tmp_path):
    from ase.db import connect

    mats = {f"MoS2-{k}": make_pair(k, pbc=[True, True, False]) for k in range(3)}
    with connect(str(tmp_path / "unrelaxed.db")) as db:
        for k, (name, (u, _)) in enumerate(mats.items()):
            if k == 0:  # the authors' row layout: structure in data['structure.json']['1']
                frame = {"numbers": u.numbers.tolist(), "positions": u.positions.tolist(), "cell": u.cell.array.tolist()}
                db.write(Atoms("H", cell=np.eye(3)), folder=f"/tree/A/{name}", data={"structure.json": {"1": frame}})
            else:
                db.write(u, folder=f"/tree/B/{name}/")
        db.write(make_pair(5)[0], folder="/tree/C/lonely")
    with connect(str(tmp_path / "relaxed.db")) as db:
        for name, (_, r) in list(mats.items())[:2]:
            db.write(r, folder=f"/other/{name}")
        db.write(make_pair(6)[1], uid="orphan")
    (tmp_path / "train.csv").write_text("atoms_id\nMoS2-0\n")
    (tmp_path / "val.csv").write_text("atoms_id\nMoS2-1\n")
    got, skipped = items(IMPORTERS.get("c2db")(tmp_path))
    assert sorted(got) == ["MoS2-0", "MoS2-1"]
    assert_same(got["MoS2-0"].unrelaxed, mats["MoS2-0"][0], atol=1e-9)
    assert_same(got["MoS2-1"].relaxed, mats["MoS2-1"][1], atol=1e-9)
    for p in got.values():
        assert list(p.unrelaxed.pbc) == [True, True, False] and list(p.relaxed.pbc) == [True, True, False]
    assert (got["MoS2-0"].split, got["MoS2-1"].split) == ("train", "val")
    assert {k: s.code for k, s in skipped.items()} == {"MoS2-2": "missing_partner", "lonely": "missing_partner",
                                                       "orphan": "missing_partner"}


# ------------------------------------------------------------------ custom
def test_custom_test_split_may_lack_relaxed(tmp_path):
    (tmp_path / "CIF").mkdir()
    for k in range(4):
        u, r = make_pair(k, n_rep=2)
        write(tmp_path / "CIF" / f"data_{k}_unrelaxed.cif", u)
        if k in (0, 1):
            write(tmp_path / "CIF" / f"data_{k}_relaxed.cif", r)
    (tmp_path / "train.csv").write_text("atoms_id\ndata_0\ndata_2\n")
    (tmp_path / "val.csv").write_text("atoms_id\ndata_1\n")
    (tmp_path / "test.csv").write_text("atoms_id\ndata_3\n")
    got, skipped = items(IMPORTERS.get("custom")(tmp_path))
    assert got["data_3"].relaxed is None and got["data_3"].split == "test"
    assert_same_cif(got["data_3"].unrelaxed, make_pair(3, n_rep=2)[0])
    assert got["data_0"].relaxed is not None and got["data_1"].split == "val"
    assert skipped["data_2"].code == "missing_partner"


def test_custom_bad_csv_column(tmp_path):
    (tmp_path / "train.csv").write_text("id\nx\n")
    with pytest.raises(ValueError, match="no 'atoms_id' column"):
        IMPORTERS.get("custom")(tmp_path)


# ------------------------------------------------------------------ legacy LMDBs (pickled PyG Data)
def _write_legacy_lmdb(path, records):
    import lmdb

    env = lmdb.open(str(path), subdir=False, map_size=1 << 24, meminit=False)
    with env.begin(write=True) as txn:
        for i, rec in enumerate(records):
            txn.put(f"{i}".encode("ascii"), rec if isinstance(rec, bytes) else pickle.dumps(rec, protocol=-1))
        txn.put(b"length", pickle.dumps(len(records), protocol=-1))
    env.sync()
    env.close()


def _e3relax_data(u, r, cif_id):
    import torch
    from torch_geometric.data import Data

    return Data(cell_u=torch.tensor(u.cell.array, dtype=torch.float32).view(1, 3, 3),
                pos_u=torch.tensor(u.positions, dtype=torch.float32),
                cell_r=torch.tensor(r.cell.array, dtype=torch.float32).view(1, 3, 3),
                pos_r=torch.tensor(r.positions, dtype=torch.float32),
                x=torch.tensor(u.numbers, dtype=torch.float32), edge_index=torch.zeros(2, 0, dtype=torch.long),
                cell_offsets=torch.zeros(0, 3), natoms=len(u), pbc=torch.tensor([True, True, True]),
                cif_id=cif_id, y=-1.5)


def test_legacy_lmdb_e3relax_and_oc22(tmp_path):
    import torch
    from torch_geometric.data import Data

    (tmp_path / "train_E3Relax").mkdir()
    (tmp_path / "val_id_E3Relax").mkdir()
    pairs = [make_pair(k) for k in range(3)]
    _write_legacy_lmdb(tmp_path / "train_E3Relax" / "data.0000.lmdb",
                       [_e3relax_data(u, r, f"mp-{k}_relaxed") for k, (u, r) in enumerate(pairs[:2])])
    _write_legacy_lmdb(tmp_path / "train_E3Relax" / "data.0001.lmdb",
                       [_e3relax_data(*pairs[2], "mp-2_relaxed"), b"\x80garbage", {"foo": 1}])
    u, r = make_pair(7, n_rep=2)
    oc22 = Data(pos=torch.tensor(u.positions), cell=torch.tensor(u.cell.array).view(1, 3, 3),
                atomic_numbers=torch.tensor(u.numbers, dtype=torch.float32), tags=torch.tensor([0, 1, 1, 2]),
                fixed=torch.tensor([1, 0, 0, 0]), pos_relaxed=torch.tensor(r.positions), sid=1234,
                natoms=4, y_relaxed=-10.0)
    _write_legacy_lmdb(tmp_path / "val_id_E3Relax" / "data.0000.lmdb", [oc22])

    with pytest.raises(PermissionError) as info:
        IMPORTERS.get("legacy_lmdb")(tmp_path)
    assert str(info.value) == (
        f"LegacyLmdbImporter: reading '{tmp_path}' means unpickling Python objects, which can run arbitrary "
        "code. Pass --trust-pickle (trust_pickle=True) only for files from a source you trust.")

    got, skipped = items(IMPORTERS.get("legacy_lmdb")(tmp_path, trust_pickle=True))
    assert sorted(got) == ["1234", "mp-0_relaxed", "mp-1_relaxed", "mp-2_relaxed"]
    for k in range(3):
        p = got[f"mp-{k}_relaxed"]
        assert p.split == "train" and p.energy == pytest.approx(-1.5)
        assert_same(p.unrelaxed, pairs[k][0], atol=1e-5)
        assert_same(p.relaxed, pairs[k][1], atol=1e-5)
    slab = got["1234"]
    assert slab.split == "val" and slab.energy is None
    np.testing.assert_allclose(slab.relaxed.cell.array, u.cell.array)          # fixed cell
    np.testing.assert_allclose(slab.relaxed.positions, r.positions)
    assert list(slab.unrelaxed.get_tags()) == [0, 1, 1, 2]
    assert list(slab.relaxed.constraints[0].get_indices()) == [0]
    assert {s.code for s in skipped.values()} == {"unreadable"} and len(skipped) == 2
    assert any("neither pos_u/pos_r nor pos/pos_relaxed" in s.reason for s in skipped.values())

    # converted to the safe format, the OC22 tags and fixed atoms survive into the LMDB records
    from e3relax import keys
    from e3relax.datasets.convert import convert
    from e3relax.datasets.reader import LmdbDataset

    convert(IMPORTERS.get("legacy_lmdb")(tmp_path, trust_pickle=True), tmp_path / "out", layout="legacy_lmdb",
            progress=False)
    val = LmdbDataset(tmp_path / "out" / "val.lmdb")
    assert val.ids == ["1234"]
    assert val[0][keys.TAGS].tolist() == [0, 1, 1, 2]
    assert val[0][keys.FIXED].tolist() == [True, False, False, False]


def test_legacy_lmdb_single_file(tmp_path):
    u, r = make_pair(1)
    _write_legacy_lmdb(tmp_path / "one.lmdb", [_e3relax_data(u, r, "x")])
    got, _ = items(IMPORTERS.get("legacy_lmdb")(tmp_path / "one.lmdb", trust_pickle=True))
    assert list(got) == ["x"] and got["x"].split is None


def test_legacy_lmdb_old_pyg_storage(tmp_path):
    """PyG 1.x pickles keep fields in ``__dict__`` (no ``_store``), as in the published OC22 LMDBs."""
    import torch
    from torch_geometric.data import Data

    u, r = make_pair(2)
    old = Data.__new__(Data)
    old.__dict__.update(pos=torch.tensor(u.positions), cell=torch.tensor(u.cell.array).view(1, 3, 3),
                        atomic_numbers=torch.tensor(u.numbers, dtype=torch.float32),
                        pos_relaxed=torch.tensor(r.positions), sid=77, __num_nodes__=2)
    assert "_store" not in pickle.loads(pickle.dumps(old)).__dict__
    _write_legacy_lmdb(tmp_path / "oc.lmdb", [old])
    got, _ = items(IMPORTERS.get("legacy_lmdb")(tmp_path / "oc.lmdb", trust_pickle=True))
    assert_same(got["77"].relaxed, Atoms(u.numbers, positions=r.positions, cell=u.cell), atol=1e-9)


# ------------------------------------------------------------------ extxyz
def _tagged(atoms, **info):
    atoms = atoms.copy()
    atoms.info.update(info)
    return atoms


def test_extxyz_alternating_pair_file(tmp_path):
    pairs = [make_pair(k, n_rep=2) for k in range(3)]
    frames = [f for u, r in pairs for f in (u, r)] + [pairs[0][0]]   # odd frame count: last has no partner
    write(tmp_path / "pairs.extxyz", frames, format="extxyz")
    got, skipped = items(IMPORTERS.get("extxyz")(tmp_path / "pairs.extxyz"))
    assert sorted(got) == ["pairs:0", "pairs:1", "pairs:2"]
    assert_same(got["pairs:2"].relaxed, pairs[2][1], atol=1e-6)
    assert skipped["pairs:3"].code == "missing_partner"


def test_extxyz_roles_ids_gzip_energy_split(tmp_path):
    u0, r0 = make_pair(0)
    u1, r1 = make_pair(1)
    frames = [_tagged(r1, id="b", role="relaxed", energy_per_atom=-2.5), _tagged(u0, id="a", role="unrelaxed", split="val"),
              _tagged(u1, id="b", role="unrelaxed"), _tagged(r0, id="a", role="relaxed"),
              _tagged(u1, id="c", role="unrelaxed")]
    write(tmp_path / "p.extxyz", frames, format="extxyz")
    with open(tmp_path / "p.extxyz", "rb") as src, gzip.open(tmp_path / "p.extxyz.gz", "wb") as dst:
        dst.write(src.read())
    got, skipped = items(IMPORTERS.get("extxyz")(tmp_path / "p.extxyz.gz"))
    assert sorted(got) == ["a", "b"] and got["b"].energy == -2.5 and got["a"].split == "val"
    assert_same(got["a"].relaxed, r0, atol=1e-6)
    assert skipped["c"].code == "missing_partner" and "no relaxed frame" in skipped["c"].reason


def test_extxyz_two_files_and_trajectories(tmp_path):
    pairs = [make_pair(k) for k in range(3)]
    two = tmp_path / "two"
    two.mkdir()
    write(two / "unrelaxed.extxyz", [u for u, _ in pairs], format="extxyz")
    write(two / "relaxed.extxyz", [r for _, r in pairs[:2]], format="extxyz")
    got, skipped = items(IMPORTERS.get("extxyz")(two))
    assert sorted(got) == ["0", "1"] and skipped["2"].code == "missing_partner"
    assert_same(got["1"].unrelaxed, pairs[1][0], atol=1e-6)

    traj = tmp_path / "traj"
    traj.mkdir()
    for k, (u, r) in enumerate(pairs):
        mid = u.copy()
        mid.positions = 0.5 * (u.positions + r.positions)
        write(traj / f"s{k}.extxyz", [u, mid, r] if k else [u], format="extxyz")
    (traj / "bad.extxyz").write_text("3\nnot extxyz\nH 0 0\n")
    got, skipped = items(IMPORTERS.get("extxyz")(traj))
    assert sorted(got) == ["s1", "s2"] and len(got["s2"].trajectory) == 3
    assert_same(got["s2"].relaxed, pairs[2][1], atol=1e-6)
    assert skipped["s0"].code == "missing_partner" and skipped["bad"].code == "unreadable"


def test_extxyz_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="unknown mode 'pair'"):
        IMPORTERS.get("extxyz")(tmp_path, mode="pair")
