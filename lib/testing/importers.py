"""Test mixin for an importer: write a small fixture in its layout, get the standard checks.

::

    from e3relax.testing import ImporterTests

    class TestMyLayout(ImporterTests):
        importer = "my_pkg.MyImporter"            # a registered name, a dotted path or the class

        def write_layout(self, root):
            ...                                   # write files under root
            return {"a": "ok", "b": "missing_partner"}   # expected outcome per id

An outcome is ``"ok"`` (the pair converts), the ``code`` of a :class:`Skipped` item the importer
yields (``missing_partner``, ``unreadable``, ...) or the code of the validation error the record
builder raises (``species``, ``atom_count``, ``coincident``, ...). Every test takes pytest's
``tmp_path`` and nothing else.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from e3relax import keys
from e3relax.registry import GRAPHS, IMPORTERS

__all__ = ["ImporterTests"]


class ImporterTests:
    """Checks of an importer on a fixture: outcomes, record validity, ids, atom order, LMDB round trip.

    Attributes:
        importer: registered name, dotted path or class of the importer.
        options: keyword arguments of the importer's constructor.
        graph_spec: graph builder of the records (``GRAPHS.build`` spec).
        max_displacement: largest allowed distance (Angstrom) of an atom from its relaxed
            counterpart (nearest image); a larger one means the two sides' atom orders disagree.
    """

    importer: ClassVar[str | type | None] = None
    options: ClassVar[Mapping[str, Any]] = {}
    graph_spec: ClassVar[Mapping[str, Any]] = {"name": "periodic_multi_edge", "cutoff": 4.0, "max_neighbors": 24}
    max_displacement: ClassVar[float] = 1.0

    # ------------------------------------------------------------------ to provide / override
    def write_layout(self, root: Path) -> Mapping[str, str]:
        """Write the fixture under ``root`` (an empty folder); return the expected outcome per id."""
        raise NotImplementedError(f"{type(self).__name__}: define write_layout(root) -> {{id: outcome}}")

    def source(self, root: Path) -> Path:
        """The ``src`` argument of the importer for a fixture written under ``root``."""
        return root

    def make_importer(self, root: Path) -> Any:
        """The importer under test, constructed on the fixture written under ``root``."""
        if self.importer is None:
            raise TypeError(f"{type(self).__name__}: set importer to the importer to test")
        cls = IMPORTERS.get(self.importer) if isinstance(self.importer, str) else self.importer
        return cls(self.source(root), **dict(self.options))

    # ------------------------------------------------------------------ helpers
    def _fixture(self, tmp_path: Path) -> tuple[dict[str, str], Any, list]:
        root = Path(tmp_path) / "layout"
        root.mkdir(parents=True, exist_ok=True)
        expected = dict(self.write_layout(root))
        importer = self.make_importer(root)
        return expected, importer, list(importer)

    def _graph(self) -> Any:
        return GRAPHS.build(dict(self.graph_spec))

    def _record(self, item: Any, graph: Any) -> tuple[dict | None, str | None]:
        """``(record, None)`` or ``(None, validation code)`` for a pair."""
        from e3relax.records import make_record
        from e3relax.structures import PairValidationError

        try:
            rec, _ = make_record(item.unrelaxed, item.relaxed, item.id, graph, energy=item.energy,
                                 trajectory=item.trajectory)
        except PairValidationError as exc:
            return None, exc.code
        return rec, None

    def _records(self, tmp_path: Path) -> list[dict]:
        from e3relax.datasets.importers.base import RawPair

        _, _, items = self._fixture(tmp_path)
        graph = self._graph()
        out = [self._record(i, graph)[0] for i in items if isinstance(i, RawPair)]
        out = [r for r in out if r is not None]
        assert out, f"{type(self).__name__}: the fixture yields no valid pair"
        return out

    # ------------------------------------------------------------------ tests
    def test_outcomes_match_the_fixture(self, tmp_path: Path) -> None:
        from e3relax.datasets.importers.base import RawPair, Skipped

        expected, _, items = self._fixture(tmp_path)
        graph = self._graph()
        got = {}
        for item in items:
            assert isinstance(item, (RawPair, Skipped)), f"an importer yields RawPair or Skipped, not {type(item)}"
            if isinstance(item, Skipped):
                assert item.reason, f"'{item.id}' skipped ({item.code}) without a reason"
                got[item.id] = item.code
            else:
                got[item.id] = self._record(item, graph)[1] or "ok"
        assert got == expected, f"outcomes {got}, the fixture expects {expected}"

    def test_records_are_valid(self, tmp_path: Path) -> None:
        for rec in self._records(tmp_path):
            sid, n = rec[keys.ID], len(rec[keys.Z])
            assert n > 0 and rec[keys.POS_U].shape == rec[keys.POS_R].shape == (n, 3), sid
            assert rec[keys.CELL_U].shape == rec[keys.CELL_R].shape == (3, 3), sid
            for k in (keys.POS_U, keys.POS_R, keys.CELL_U, keys.CELL_R):
                assert rec[k].dtype == np.float64 and np.isfinite(rec[k]).all(), f"{sid}: {k} not finite float64"
            assert rec[keys.Z].min() >= 1 and rec[keys.Z].max() <= 118, f"{sid}: atomic numbers {rec[keys.Z]}"
            assert abs(np.linalg.det(rec[keys.CELL_U])) > 1e-6, f"{sid}: degenerate input cell"
            ei = rec[keys.EDGE_INDEX]
            assert ei.shape[0] == 2 and ei.shape[1] > 0 and ei.max() < n, f"{sid}: edge_index {ei.shape}"
            if keys.ENERGY in rec:
                assert np.isfinite(rec[keys.ENERGY]), f"{sid}: energy {rec[keys.ENERGY]}"

    def test_ids_are_unique(self, tmp_path: Path) -> None:
        _, _, items = self._fixture(tmp_path)
        ids = [i.id for i in items]
        assert all(isinstance(i, str) and i for i in ids), f"ids must be non-empty strings: {ids}"
        dup = sorted({i for i in ids if ids.count(i) > 1})
        assert not dup, f"ids yielded more than once: {dup}"

    def test_atom_order_agrees(self, tmp_path: Path) -> None:
        """Same species sequence on both sides (and in every frame), each atom near its partner."""
        for rec in self._records(tmp_path):
            sid = rec[keys.ID]
            moved = np.linalg.norm(rec[keys.POS_R] - rec[keys.POS_U], axis=-1).max()
            assert moved < self.max_displacement, (
                f"{sid}: an atom lies {moved:.2f} A from its relaxed counterpart (nearest image); the atom orders "
                f"of the two sides disagree (max_displacement {self.max_displacement})")
            if keys.TRAJ_POS in rec:
                tpos = rec[keys.TRAJ_POS]
                assert tpos.shape[0] == len(rec[keys.Z]), f"{sid}: trajectory {tpos.shape}"
                step = np.linalg.norm(tpos - rec[keys.POS_U][:, None], axis=-1).max()
                assert step < self.max_displacement, f"{sid}: a trajectory frame moves an atom {step:.2f} A"

    def test_tasks_pickle_and_load_like_iteration(self, tmp_path: Path) -> None:
        """The converter sends the importer and its tasks to worker processes."""
        _, importer, items = self._fixture(tmp_path)
        # trusted round trip of this process's own objects, as multiprocessing sends them to workers
        copy = pickle.loads(pickle.dumps(importer))  # trusted: pickled here, never read from data
        loaded = [copy.load(pickle.loads(pickle.dumps(t))) for t in importer.tasks()]  # trusted: as above
        assert [(type(i).__name__, i.id) for i in loaded] == [(type(i).__name__, i.id) for i in items]
        assert [i.id for i in self.make_importer(Path(tmp_path) / "layout")] == [i.id for i in items], \
            "iteration order is not deterministic"

    def test_lmdb_round_trip(self, tmp_path: Path) -> None:
        import torch

        from e3relax.datasets.lmdb_format import SHARD_PATTERN, encode_record, make_metadata
        from e3relax.datasets.reader import LmdbDataset, release
        from e3relax.datasets.writer import write_shard
        from e3relax.records import record_to_data

        records = self._records(tmp_path)
        folder = Path(tmp_path) / "out" / "train.lmdb"
        folder.mkdir(parents=True)
        ids = [r[keys.ID] for r in records]
        meta = make_metadata(natoms=[len(r[keys.Z]) for r in records], ids=ids, graph=dict(self.graph_spec),
                             source={"layout": str(self.importer)}, split="train", shard=0, num_shards=1,
                             split_records=len(records))
        shard = write_shard(folder / SHARD_PATTERN.format(0), [encode_record(r) for r in records], metadata=meta)
        ds = LmdbDataset(folder, dtype=torch.float64)
        try:
            assert len(ds) == len(records) and ds.ids == ids
            for i, rec in enumerate(records):
                back = ds.record(i)
                assert sorted(back) == sorted(rec), f"{ids[i]}: fields {sorted(back)} != {sorted(rec)}"
                for k, v in rec.items():
                    same = np.array_equal(np.asarray(back[k]), np.asarray(v))
                    assert same, f"{ids[i]}: field {k} changed in the LMDB round trip"
                want, got = record_to_data(rec, dtype=torch.float64), ds[i]
                for k in (keys.POS_U, keys.POS_R, keys.CELL_U, keys.CELL_R, keys.Z, keys.EDGE_INDEX):
                    assert torch.equal(got[k], want[k]), f"{ids[i]}: Data field {k} differs after reading"
        finally:
            ds.close()
            release(shard)
