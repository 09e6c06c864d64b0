"""Training on several datasets at once: weighted shares of the stream, resumable order, config, prior fit."""
from __future__ import annotations

from collections import Counter

import pytest
from ignite.engine import Events

import test_engine_toy as toy
from e3relax.engine.data import StreamBatchSampler, WeightedConcat, build_dataset, epoch_counts
from e3relax.engine.trainer import train
from e3relax.errors import InputError


def test_epoch_counts_follow_the_weights_and_add_up():
    assert epoch_counts([100, 900], [1.0, 1.0]) == [500, 500]
    assert epoch_counts([10, 10, 10], [1.0, 1.0, 1.0]) == [10, 10, 10]
    assert sum(epoch_counts([7, 13, 5], [0.3, 2.0, 1.1])) == 25
    assert epoch_counts([0, 9], [5.0, 1.0]) == [0, 9]  # an empty dataset gets no draws


def test_weighted_stream_shares_each_part_without_replacement_and_resumes():
    sizes = [6, 30]  # a small set of pairs and many frames, weighted 1 : 1
    s = StreamBatchSampler(36, 4, seed=2, sizes=sizes, weights=[1.0, 1.0])
    draws = [i for k in range(90) for i in s.batch(k)]  # 360 draws = 10 data epochs
    share = sum(i < 6 for i in draws) / len(draws)
    assert share == pytest.approx(0.5)
    for e in range(10):  # each data epoch of 36 draws: 18 from each part, its records equally often
        epoch = Counter(draws[36 * e:36 * (e + 1)])
        assert all(epoch[i] == 3 for i in range(6))
        assert sum(epoch[i] for i in range(6, 36)) == 18
    assert Counter(draws[:180]) == Counter({i: 3 for i in range(6, 36)}) + Counter({i: 15 for i in range(6)})
    again = StreamBatchSampler(36, 4, seed=2, sizes=sizes, weights=[1.0, 1.0])
    again.start_batch = 41
    it = iter(again)
    assert [next(it) for _ in range(5)] == [s.batch(k) for k in range(41, 46)]  # a pure function of (seed, k)
    r0 = StreamBatchSampler(36, 2, seed=2, rank=0, world_size=2, sizes=sizes, weights=[1.0, 1.0])
    r1 = StreamBatchSampler(36, 2, seed=2, rank=1, world_size=2, sizes=sizes, weights=[1.0, 1.0])
    assert r0.batch(7) + r1.batch(7) == s.batch(7)
    with pytest.raises(ValueError, match="sizes and weights together"):
        StreamBatchSampler(36, 4, sizes=sizes)


def test_config_list_of_weighted_paths(tmp_path):
    a = toy.write_lmdb(tmp_path / "a.lmdb", range(0, 6))
    b = toy.write_lmdb(tmp_path / "b.lmdb", range(100, 120))
    ds = build_dataset([{"path": str(a), "weight": 3}, str(b)], what="data.train")
    assert isinstance(ds, WeightedConcat) and ds.weights == [3.0, 1.0] and ds.sizes == [6, 20]
    with pytest.raises(InputError, match=r"data.train\[1\]: weight must be a positive number"):
        build_dataset([str(a), {"path": str(b), "weight": 0}], what="data.train")
    with pytest.raises(InputError, match="unknown key.*wieght"):
        build_dataset([{"path": str(a), "wieght": 2}], what="data.train")


SEEN: Counter = Counter()


def count_sources(trainer, evaluator, context):
    """Hook: count the training structures drawn from each toy LMDB (ids toy-0.. and toy-100..)."""
    def count(engine):
        for sid in engine.state.batch["id"]:
            SEEN["a" if int(sid.split("-")[1]) < 100 else "b"] += 1
    trainer.add_event_handler(Events.ITERATION_COMPLETED, count)


def test_training_draws_each_dataset_by_its_weight(tmp_path):
    SEEN.clear()
    a = toy.write_lmdb(tmp_path / "a.lmdb", range(0, 4))
    b = toy.write_lmdb(tmp_path / "b.lmdb", range(100, 132))
    cfg = toy.toy_config(tmp_path / "run", hooks=["test_weighted_data.count_sources"], log={"tensorboard": False},
                         data={"train": [{"path": str(a), "weight": 1.0}, {"path": str(b), "weight": 1.0}],
                               "val": str(a), "batch_size": 4},
                         schedule={"epoch_length": 9, "max_epochs": 4})
    out = train(cfg)
    assert out["iteration"] == 36
    assert SEEN["a"] == SEEN["b"] == 72  # half of every data epoch, though a holds 4 and b 32 pairs


def test_prior_is_fitted_on_pairs_not_on_their_frames(tmp_path):
    from e3relax.datasets.reader import LmdbDataset
    from e3relax.priors import fit_records

    a = LmdbDataset(toy.write_lmdb(tmp_path / "a.lmdb", range(4)))
    b = LmdbDataset(toy.write_lmdb(tmp_path / "b.lmdb", range(100, 110)))
    b.metadata["split"] = "train_frames"
    assert fit_records(WeightedConcat([a, b], [1.0, 1.0])) is a
    assert fit_records(WeightedConcat([b], [1.0])).datasets == [b]  # only frames: fit on them
    assert fit_records(a) is a
