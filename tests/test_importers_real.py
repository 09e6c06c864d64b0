"""The two real layouts in ../shared/data: pnictides (poscar_pairs) and srnbh (vasp_dirs).

Skipped with a message where the data folder is absent. The full pnictides conversion is marked
slow; a subset runs by default.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data_fixtures import graph_spec
from e3relax import keys
from e3relax.datasets.convert import convert
from e3relax.datasets.importers.base import RawPair
from e3relax.datasets.reader import LmdbDataset
from e3relax.registry import IMPORTERS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PNICTIDES = DATA / "pnictides"
SRNBH = DATA / "srnbh"

pytestmark = pytest.mark.data


def _need(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f"real data folder '{folder}' is absent (expected ../shared/data beside the repository)")


def test_pnictides_subset(tmp_path):
    _need(PNICTIDES)
    importer = IMPORTERS.build({"name": "poscar_pairs", "src": PNICTIDES})
    assert len(importer) == 9384
    report = convert(importer, tmp_path, layout="poscar_pairs", graph=graph_spec(), workers=2, limit=150,
                     progress=False)
    c = report["counts"]
    assert c["items"] == 150 and c["converted"] + c["skipped"] == 150
    assert set(c["by_reason"]) <= {"species", "atom_count"} and c["by_reason"].get("species", 0) > 0
    skipped = {e["id"]: e["code"] for e in report["skipped"]}
    for k, item in enumerate(importer):  # re-read: every skipped pair is really bad, every other converted
        if k == 150:
            break
        assert isinstance(item, RawPair)
        if item.id not in skipped:
            assert item.id in report["rotation_removed_deg"]
        elif skipped[item.id] == "atom_count":
            assert len(item.unrelaxed) != len(item.relaxed)
        else:
            assert list(item.unrelaxed.numbers) != list(item.relaxed.numbers)
    ds = LmdbDataset(tmp_path / "train.lmdb")
    d = ds[0]
    assert d[keys.POS_U].shape == d[keys.POS_R].shape and torch.isfinite(d[keys.ENERGY]).all()


@pytest.mark.slow
def test_pnictides_full_counts(tmp_path):
    """9,149 pairs convert; the 233 species mismatches and 2 atom-count mismatches are named."""
    _need(PNICTIDES)
    importer = IMPORTERS.build({"name": "poscar_pairs", "src": PNICTIDES})
    report = convert(importer, tmp_path, layout="poscar_pairs", graph=graph_spec(), workers=2, progress=False)
    c = report["counts"]
    assert c["converted"] == 9149 and c["by_reason"] == {"species": 233, "atom_count": 2}
    assert sorted(e["id"] for e in report["skipped"] if e["code"] == "atom_count") == ["CdAs2", "CdSb2"]
    assert sum(c["splits"].values()) == 9149
    assert 0.12 < report["rotation"]["over_1deg"] < 0.20 and 0.05 < report["rotation"]["over_10deg"] < 0.10
    sizes = [len(LmdbDataset(tmp_path / f"{s}.lmdb")) for s in ("train", "val", "test")]
    assert sum(sizes) == 9149 and abs(sizes[0] / 9149 - 0.8) < 0.02


def test_srnbh_runs(tmp_path):
    """All complete run folders convert; the four incomplete ones are named."""
    _need(SRNBH)
    importer = IMPORTERS.build({"name": "vasp_dirs", "src": SRNBH, "trajectory": True, "num_frames": 3})
    report = convert(importer, tmp_path, layout="vasp_dirs", graph=graph_spec(), workers=2, progress=False)
    c = report["counts"]
    assert c["items"] == 655 and c["converted"] == 651
    assert {e["id"]: e["code"] for e in report["skipped"]} == {
        "209": "unreadable", "231": "unreadable", "385": "missing_partner", "391": "missing_partner"}
    ds = LmdbDataset(tmp_path / "val.lmdb", dtype=torch.float64)
    rec = ds.record(0)
    assert rec[keys.TRAJ_POS].shape == (len(rec[keys.Z]), 3, 3)
    # the last frame of the last stage is the relaxed structure (same frame convention)
    np.testing.assert_allclose(rec[keys.TRAJ_POS][:, -1], rec[keys.POS_R], atol=1e-4)
    np.testing.assert_allclose(rec[keys.TRAJ_CELL][-1], rec[keys.CELL_R], atol=1e-4)


def test_srnbh_trajectory_frames_as_pairs(tmp_path):
    """Frames of both stages become training pairs of training parents only; every pair still converts."""
    _need(SRNBH)
    importer = IMPORTERS.build({"name": "vasp_dirs", "src": SRNBH, "frames_as_pairs": True, "max_frames": 2})
    report = convert(importer, tmp_path, layout="vasp_dirs", graph=graph_spec(), workers=2, progress=False)
    c = report["counts"]
    assert c["items"] == 655 and c["converted"] == 651 and c["splits"]["train"] == 516
    assert c["frames"]["parents"] == 516 and c["frames"]["skipped"] == 0
    assert c["splits"]["train_frames"] == c["frames"]["converted"] == 2 * 516
    assert c["frames"]["held_out"] == 2 * (73 + 62)
    frames, train = LmdbDataset(tmp_path / "train_frames.lmdb"), LmdbDataset(tmp_path / "train.lmdb")
    assert {frames.record(i)[keys.PARENT] for i in range(len(frames))} == set(train.ids)
