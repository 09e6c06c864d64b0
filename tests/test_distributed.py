"""Distributed training through ``idist.Parallel``: two CPU processes with the gloo backend see
different samples at every step and keep identical weights; rank 0 alone writes the run folder; a
NaN on one rank stops both at the same step."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

import test_engine_toy as toy
from e3relax import keys as K
from e3relax.engine.trainer import train


def record(trainer, evaluator, context):
    """Hook: every rank saves the structure ids it trained on and its final weights."""
    import ignite.distributed as idist

    rank, seen = idist.get_rank(), []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(list(e.state.batch[K.ID])))

    def save(engine):
        model = getattr(context["model"], "module", context["model"])
        torch.save({"ids": seen, "world": idist.get_world_size(),
                    "weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    "ema": {k: v.detach().clone() for k, v in context["ema_model"].state_dict().items()}},
                   Path(context["run_dir"]) / f"rank{rank}.pt")
    trainer.add_event_handler(Events.COMPLETED, save)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    cfg = toy.toy_config(tmp_path, hooks=["test_distributed.record"],
                         model={"name": "test_engine_toy.ToyModel", "hidden_channels": 8, "num_layers": 2},
                         loss={"name": "test_engine_toy.ToyLoss"},
                         schedule={"max_epochs": 2}, log={"figures": False},
                         distributed={"nproc_per_node": 2, "backend": "gloo", "master_port": _free_port()})
    train(cfg, datasets={"train": toy.make_dataset(12), "val": toy.make_dataset(6, start=100)})
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert len(r0["ids"]) == len(r1["ids"]) == 8
    for a, b in zip(r0["ids"], r1["ids"]):
        assert len(a) == len(b) == 2  # global batch 4 split in two
        assert not set(a) & set(b), "ranks saw the same structure in one step"
    for key in ("weights", "ema"):
        for name, value in r0[key].items():
            assert torch.equal(value, r1[key][name]), f"{key}.{name} differs between ranks"
    # rank 0 wrote the run folder (one event file: no logger on rank 1)
    assert (tmp_path / "checkpoints" / "last.pt").exists() and (tmp_path / "config.yaml").exists()
    assert len(list((tmp_path / "tb").glob("events.*"))) == 1


def poison_rank1(trainer, evaluator, context):
    """Hook: on rank 1 only, turn the embedding weights into NaN before iteration 6."""
    import ignite.distributed as idist

    def corrupt(engine):
        with torch.no_grad():
            getattr(context["model"], "module", context["model"]).embed.weight.fill_(float("nan"))
    if idist.get_rank() == 1:
        trainer.add_event_handler(Events.ITERATION_STARTED(once=6), corrupt)


def test_nan_on_one_rank_stops_all(tmp_path):
    """Every rank sees the same all-reduced loss and gradient norm, so all skip or stop together."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    cfg = toy.toy_config(tmp_path, hooks=["test_distributed.record", "test_distributed.poison_rank1"],
                         model={"name": "test_engine_toy.ToyModel", "hidden_channels": 8, "num_layers": 2},
                         loss={"name": "test_engine_toy.ToyLoss"}, log={"figures": False, "tensorboard": False},
                         optim={"max_nonfinite_steps": 0, "nonfinite_rewinds": 0},  # stop at the first
                         distributed={"nproc_per_node": 2, "backend": "gloo", "master_port": _free_port()})
    train(cfg, datasets={"train": toy.make_dataset(12), "val": toy.make_dataset(6, start=100)})
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert len(r0["ids"]) == len(r1["ids"]) == 6  # both stopped at the NaN step, none hung
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert last["trainer"]["iteration"] == 4


def poison_rank1_at_full_rate(trainer, evaluator, context):
    """Hook: ``poison_rank1`` while optim.lr is still the toy's 3e-3 (a rewind lowers it)."""
    if context["config"]["optim"]["lr"] == 3e-3:
        poison_rank1(trainer, evaluator, context)


def test_ranks_rewind_together(tmp_path):
    """A NaN on rank 1 stops both ranks; both go back to last.pt at half the rate, train to the end
    and keep identical weights."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    cfg = toy.toy_config(tmp_path, hooks=["test_distributed.record", "test_distributed.poison_rank1_at_full_rate"],
                         model={"name": "test_engine_toy.ToyModel", "hidden_channels": 8, "num_layers": 2},
                         loss={"name": "test_engine_toy.ToyLoss"}, log={"figures": False, "tensorboard": False},
                         optim={"max_nonfinite_steps": 0},
                         distributed={"nproc_per_node": 2, "backend": "gloo", "master_port": _free_port()})
    train(cfg, datasets={"train": toy.make_dataset(12), "val": toy.make_dataset(6, start=100)})
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert len(r0["ids"]) == len(r1["ids"]) == 12 - 4  # the resumed call trained steps 5-12
    assert all(torch.equal(r0["weights"][k], r1["weights"][k]) for k in r0["weights"])
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert last["trainer"]["iteration"] == 12 and last["config"]["optim"]["lr"] == pytest.approx(1.5e-3)
