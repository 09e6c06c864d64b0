"""Training engine: a short seeded CPU run writes checkpoints and TensorBoard events, resumes exactly,
fine-tunes from a checkpoint, and ``e3relax evaluate`` writes its report."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from ignite.engine import Events

import test_engine_toy as toy
from e3relax.engine.checkpoint import FORMAT_VERSION, load_checkpoint
from e3relax.engine.handlers import load_nonfinite_dump
from e3relax.engine.trainer import train

TRAIN = toy.make_dataset(12)
VAL = toy.make_dataset(6, start=100)
DATA = {"train": TRAIN, "val": VAL}

STOP_AT = 6  # interrupt inside the second "epoch" (epoch_length 4)


def stop_early(trainer, evaluator, context):
    """Hook: interrupt the run at iteration STOP_AT (as a crash or a Ctrl-C would)."""
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=STOP_AT), lambda engine: engine.terminate())


SEEN: dict = {}


class Evil:
    """An arbitrary object: unpickling it would run code, so a safe load must refuse it."""


def record_start(trainer, evaluator, context):
    """Hook: keep the iteration and the weights the model has when training starts."""
    def keep(engine):
        SEEN["iteration"] = engine.state.iteration
        SEEN["weights"] = {k: v.clone() for k, v in context["model"].state_dict().items()}
    trainer.add_event_handler(Events.STARTED, keep)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted 12-iteration run (3 evaluations), with TensorBoard figures."""
    run_dir = tmp_path_factory.mktemp("full")
    summary = train(toy.toy_config(run_dir), datasets=DATA)
    return run_dir, summary


def _weights(run_dir, key):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")[key]


def test_run_writes_config_and_checkpoints(full_run):
    run_dir, summary = full_run
    assert summary["iteration"] == 12
    assert (run_dir / "config.yaml").exists()
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run_dir / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert ckpt["format_version"] == FORMAT_VERSION
        assert ckpt["config"]["model"] == toy.MODEL_SPEC
        assert set(ckpt["ema_model"]) == set(ckpt["model"])
    last = load_checkpoint(run_dir)
    assert {"optimizer", "scheduler", "trainer", "early_stopping", "rng", "best_checkpointer"} <= set(last)
    assert last["trainer"]["iteration"] == 12
    assert isinstance(last["rng"]["torch"], torch.Tensor)
    # EMA differs from the raw weights but both moved away from each other only slightly
    w, e = last["model"]["embed.weight"], last["ema_model"]["embed.weight"]
    assert not torch.equal(w, e)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    # validation improved over the toy run and beats the Dummy baseline reference
    assert summary["best_val_coord_mae"] < 0.0986


def test_resume_is_exact(full_run, tmp_path):
    ref_dir, _ = full_run
    cfg = toy.toy_config(tmp_path, hooks=["test_engine.stop_early"])
    out = train(cfg, datasets=DATA)
    assert out["iteration"] == STOP_AT
    assert load_checkpoint(tmp_path)["trainer"]["iteration"] == STOP_AT
    cfg["hooks"] = ["test_engine.record_start"]
    resumed = train(cfg, resume=True, datasets=DATA)
    assert resumed["iteration"] == 12
    assert SEEN["iteration"] == STOP_AT  # it continued, it did not start over
    for key in ("model", "ema_model"):
        ref, got = _weights(ref_dir, key), _weights(tmp_path, key)
        for name in ref:
            assert torch.equal(ref[name], got[name]), f"{key}.{name} differs after resume"
    ref_opt, got_opt = _weights(ref_dir, "optimizer"), _weights(tmp_path, "optimizer")
    assert ref_opt["param_groups"][0]["lr"] == got_opt["param_groups"][0]["lr"]
    assert _weights(ref_dir, "scheduler") == _weights(tmp_path, "scheduler")
    # a finished run resumes to nothing
    assert train(cfg, resume=True, datasets=DATA)["finished"] is True


def test_tensorboard_tags(full_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = full_run
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars, images = set(acc.Tags()["scalars"]), set(acc.Tags()["images"])
    expected = {"train/loss", "train/pos/0", "train/pos/1", "train/cell/0", "train/cell/1", "train/grad_norm",
                "train/lr/group_0", "train/throughput", "train/data_wait_share", "train/ema_momentum",
                "val/mae_pos", "val/shape_dev", "val/mae_vol", "val/pooled_mae_pos",
                "val/dummy/mae_pos", "val/dummy/shape_dev", "val/dummy/mae_vol"}
    assert expected <= scalars, sorted(expected - scalars)
    assert {"val/coord_error_distribution", "val/lattice_parity"} <= images
    assert len(acc.Scalars("val/mae_pos")) == 3
    assert [e.step for e in acc.Scalars("val/mae_pos")] == [4, 8, 12]
    assert "hparams" in acc.PluginTagToContent("hparams") or acc.PluginTagToContent("hparams")


def test_init_from_uses_ema_weights(full_run, tmp_path):
    ref_dir, _ = full_run
    best = ref_dir / "checkpoints" / "best.pt"
    cfg = toy.toy_config(tmp_path, init_from=str(best), hooks=["test_engine.record_start"],
                         schedule={"max_epochs": 1}, log={"tensorboard": False})
    SEEN.clear()
    train(cfg, datasets=DATA)
    ckpt = load_checkpoint(best)
    assert SEEN["iteration"] == 0
    assert all(torch.equal(SEEN["weights"][k], ckpt["ema_model"][k]) for k in ckpt["ema_model"])
    assert not all(torch.equal(SEEN["weights"][k], ckpt["model"][k]) for k in ckpt["model"])


def poison(trainer, evaluator, context):
    """Hook: turn the embedding weights into NaN before iteration 6 (after the first evaluation, at 4)."""
    def corrupt(engine):
        with torch.no_grad():
            context["model"].embed.weight.fill_(float("nan"))
    trainer.add_event_handler(Events.ITERATION_STARTED(once=6), corrupt)


def test_persistent_nan_stops_training_and_keeps_last_good_state(tmp_path):
    """NaN weights make every step non-finite: with no skipped step allowed the run stops at once."""
    cfg = toy.toy_config(tmp_path, hooks=["test_engine.poison"], log={"tensorboard": False},
                         optim={"max_nonfinite_steps": 0, "nonfinite_rewinds": 0})
    out = train(cfg, datasets=DATA)
    assert out["iteration"] == 6 and out["stopped_nonfinite"] == {"iteration": 6, "saved_iteration": 4}
    assert out["rewinds"] == []
    last = load_checkpoint(tmp_path)
    assert last["trainer"]["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def poison_at_full_rate(trainer, evaluator, context):
    """Hook: as ``poison``, but only while optim.lr is still the toy's 3e-3 (a rewind lowers it)."""
    if context["config"]["optim"]["lr"] == 3e-3:
        poison(trainer, evaluator, context)


def test_a_diverged_run_rewinds_at_a_lower_rate_and_finishes(tmp_path):
    """Weights gone non-finite at step 6: the run goes back to last.pt (step 4) at half the rate, keeps
    that rate (also in config.yaml, for --resume) and the time already spent, and trains to the end."""
    cfg = toy.toy_config(tmp_path, hooks=["test_engine.poison_at_full_rate"], log={"tensorboard": False},
                         optim={"max_nonfinite_steps": 0}, schedule={"time_limit_s": 3600.0})
    out = train(cfg, datasets=DATA)
    assert out["rewinds"] == [{"iteration": 6, "resumed_from": 4, "lr": pytest.approx(1.5e-3)}]
    assert out["iteration"] == 12 and "stopped_nonfinite" not in out and cfg["optim"]["lr"] == 3e-3
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["config"]["optim"]["lr"] == pytest.approx(1.5e-3)
    assert all(g["lr"] <= 1.5e-3 * g["lr_scale"] * (1 + 1e-9) for g in last["optimizer"]["param_groups"])
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    import yaml

    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["optim"]["lr"] == pytest.approx(1.5e-3)


def test_rewinds_are_limited_and_reported(tmp_path):
    """A run that diverges after every rewind stops after optim.nonfinite_rewinds of them."""
    cfg = toy.toy_config(tmp_path, hooks=["test_engine.poison"], log={"tensorboard": False},
                         optim={"max_nonfinite_steps": 0, "nonfinite_rewinds": 2, "rewind_lr_factor": 0.1})
    out = train(cfg, datasets=DATA)
    assert [r["iteration"] for r in out["rewinds"]] == [6, 6] and out["stopped_nonfinite"]["iteration"] == 6
    assert [r["lr"] for r in out["rewinds"]] == pytest.approx([3e-4, 3e-5])


def test_skipped_steps_and_rewinds_count_across_a_resume(tmp_path):
    """The run's tally of non-finite steps is saved with last.pt: a process that resumes the run
    reports the rewind and the skipped step of the process before it."""
    cfg = toy.toy_config(tmp_path, hooks=["test_engine.poison_at_full_rate", "test_engine.stop_early"],
                         log={"tensorboard": False}, optim={"max_nonfinite_steps": 0})
    first = train(cfg, datasets=DATA)
    rewind = [{"iteration": 6, "resumed_from": 4, "lr": pytest.approx(1.5e-3)}]
    assert first["iteration"] == STOP_AT and first["rewinds"] == rewind and first["skipped_nonfinite_steps"] == 1
    cfg["hooks"] = []
    resumed = train(cfg, resume=True, datasets=DATA)
    assert resumed["iteration"] == 12 and resumed["rewinds"] == rewind and resumed["skipped_nonfinite_steps"] == 1


def test_the_limit_of_rewinds_holds_for_the_whole_run(tmp_path):
    cfg = toy.toy_config(tmp_path, hooks=["test_engine.poison"], log={"tensorboard": False},
                         optim={"max_nonfinite_steps": 0, "nonfinite_rewinds": 1})
    assert len(train(cfg, datasets=DATA)["rewinds"]) == 1
    again = train(cfg, resume=True, datasets=DATA)  # diverges again: no second rewind
    assert len(again["rewinds"]) == 1 and again["stopped_nonfinite"]["iteration"] == 6
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["config"]["optim"]["lr"] == pytest.approx(1.5e-3)


def test_a_checkpoint_without_the_tally_still_resumes(tmp_path):
    cfg = toy.toy_config(tmp_path, hooks=["test_engine.stop_early"], log={"tensorboard": False})
    train(cfg, datasets=DATA)
    last = tmp_path / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    del ckpt["nonfinite_steps"]  # as written before the tally was saved
    torch.save(ckpt, last)
    cfg["hooks"] = []
    resumed = train(cfg, resume=True, datasets=DATA)
    assert resumed["iteration"] == 12 and resumed["skipped_nonfinite_steps"] == 0 and resumed["rewinds"] == []


def test_rewind_checkpoint_scales_rates_and_charges_the_time_spent(tmp_path):
    from e3relax.engine.rewind import rewind_checkpoint

    path = tmp_path / "last.pt"
    torch.save({"format_version": FORMAT_VERSION, "config": {"optim": {"lr": 1e-3}}, "trainer": {"iteration": 40},
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "lr_scale": 1.0}, {"lr": 1e-2, "lr_scale": 10.0}]},
                "time_budget": {"used": 50.0, "hit": False, "clock": "cpu"}}, path)
    assert rewind_checkpoint(path, 0.5, 80.0) == {"resumed_from": 40, "lr": 5e-4}
    ckpt = load_checkpoint(path)
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [5e-4, 5e-3]
    assert ckpt["time_budget"]["used"] == 80.0 and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    rewind_checkpoint(path, 1.0, 10.0)  # never gives time back
    assert load_checkpoint(path)["time_budget"]["used"] == 80.0
    assert "nonfinite_steps" not in load_checkpoint(path)
    rewind_checkpoint(path, 0.5, 90.0, stopped_at=47, skipped_steps=3)  # the run's tally records the rewind
    assert load_checkpoint(path)["nonfinite_steps"] == {"total": 3, "rewinds": [
        {"iteration": 47, "resumed_from": 40, "lr": 2.5e-4}]}


WEIGHTS: dict = {}


def nan_batch(trainer, evaluator, context):
    """Hook: iteration 6 sees a batch with NaN labels (a NaN loss once); record the weights around it."""
    def poison_batch(engine):
        batch = engine.state.batch.clone()
        batch[toy.K.POS_R] = torch.full_like(batch[toy.K.POS_R], float("nan"))
        engine.state.batch = batch

    def record(engine):
        WEIGHTS[engine.state.iteration] = {k: v.clone() for k, v in context["model"].state_dict().items()}
    trainer.add_event_handler(Events.ITERATION_STARTED(once=6), poison_batch)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=5) | Events.ITERATION_COMPLETED(once=6)
                              | Events.ITERATION_COMPLETED(once=7), record)


def test_a_non_finite_step_is_skipped_and_training_goes_on(tmp_path, caplog):
    WEIGHTS.clear()
    cfg = toy.toy_config(tmp_path, hooks=["test_engine.nan_batch"], log={"tensorboard": False})
    with caplog.at_level("WARNING", logger="e3relax.engine.handlers"):
        out = train(cfg, datasets=DATA)
    assert out["iteration"] == 12 and out["skipped_nonfinite_steps"] == 1 and "stopped_nonfinite" not in out
    assert all(torch.equal(WEIGHTS[5][k], WEIGHTS[6][k]) for k in WEIGHTS[5])  # the NaN step changed nothing
    assert not all(torch.equal(WEIGHTS[6][k], WEIGHTS[7][k]) for k in WEIGHTS[6])  # the next one trains
    assert all(torch.isfinite(v).all() for v in WEIGHTS[7].values())
    assert "iteration 6: loss nan" in caplog.text and "step skipped" in caplog.text and "toy-" in caplog.text
    state, batch, info = load_nonfinite_dump(tmp_path / "nonfinite_6.pt")  # the failure, saved to replay
    assert info["iteration"] == 6 and len(info["ids"]) == batch.num_graphs and info["ids"][0].startswith("toy-")
    assert all(torch.equal(state[k], WEIGHTS[6][k]) for k in WEIGHTS[6])
    assert torch.isnan(batch[toy.K.POS_R]).all() and torch.isfinite(batch[toy.K.POS_U]).all()


def test_evaluate_cli_writes_report(full_run, tmp_path):
    from e3relax.cli.main import main

    run_dir, _ = full_run
    lmdb = toy.write_lmdb(tmp_path / "val.lmdb", range(100, 106))
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(run_dir / "checkpoints" / "best.pt"), "--data", str(lmdb),
                 "--out", str(out), "--device", "cpu", "--batch-size", "4"]) == 0
    with (out / "per_structure.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    assert {"id", "natoms", "mae_pos", "shape_dev", "mae_vol", "dummy_mae_pos", "dummy_mae_vol"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    mean = sum(float(r["mae_pos"]) for r in rows) / 6
    assert summary["model"]["mae_pos"] == pytest.approx(mean, rel=1e-5)
    dummy = sum(float(r["dummy_mae_pos"]) for r in rows) / 6
    assert summary["dummy"]["mae_pos"] == pytest.approx(dummy, rel=1e-5)
    table = (out / "summary.md").read_text()
    assert "| mae_pos | Å |" in table and "Dummy" in table


def test_train_cli_on_lmdb_then_resume(tmp_path):
    from e3relax.cli.main import main

    train_db = toy.write_lmdb(tmp_path / "train.lmdb", range(12))
    val_db = toy.write_lmdb(tmp_path / "val.lmdb", range(100, 106))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {{name: engine_toy_model, hidden_channels: 8}}\nloss: {{name: engine_toy_loss}}\n"
                   f"data: {{train: {train_db}, val: {val_db}, batch_size: 4}}\n"
                   f"schedule: {{epoch_length: 3, max_epochs: 1}}\nlog: {{progress_bar: false, figures: false}}\n")
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--run-dir", str(run_dir), "--device", "cpu", "optim.lr=1e-3"]) == 0
    assert load_checkpoint(run_dir)["trainer"]["iteration"] == 3
    assert main(["train", "--resume", str(run_dir), "schedule.max_epochs=2"]) == 0
    last = load_checkpoint(run_dir)
    assert last["trainer"]["iteration"] == 6
    assert last["config"]["optim"]["lr"] == 1e-3 and last["config"]["schedule"]["max_epochs"] == 2
    assert last["config"]["dtype"] == "float32" and last["model"]["embed.weight"].dtype == torch.float32


def test_checkpoint_loading_is_safe_and_versioned(full_run, tmp_path):
    from e3relax.engine.checkpoint import model_from_checkpoint

    run_dir, _ = full_run
    ckpt = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    model, config = model_from_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert not model.training and config == ckpt["config"]
    assert all(torch.equal(v, ckpt["ema_model"][k]) for k, v in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float64  # the run's dtype
    newer = dict(ckpt, format_version=FORMAT_VERSION + 1)
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(ValueError, match="newer.pt has checkpoint format 2"):
        load_checkpoint(tmp_path / "newer.pt")

    torch.save({"format_version": 1, "config": {}, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt is not a checkpoint written by e3relax"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_plateau_decay_and_early_stopping(tmp_path):
    # a learning rate too small to move the validation MAE by the plateau threshold (1e-4 relative)
    cfg = toy.toy_config(tmp_path / "plateau", optim={"lr": 1e-12},
                         schedule={"plateau_patience": 0, "plateau_factor": 0.5, "min_lr": 0.0,
                                   "early_stop_patience": None}, log={"tensorboard": False})
    assert train(cfg, datasets=DATA)["iteration"] == 12
    last = load_checkpoint(tmp_path / "plateau")
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-12 * 0.5 ** 2, rel=1e-9)
    assert "early_stopping" not in last
    # with no learning at all the score never improves: stop after `patience` evaluations
    cfg = toy.toy_config(tmp_path / "stop", optim={"lr": 0.0}, schedule={"early_stop_patience": 1},
                         log={"tensorboard": False})
    assert train(cfg, datasets=DATA)["iteration"] == 8
    assert load_checkpoint(tmp_path / "stop")["early_stopping"]["counter"] == 1


def test_ema_warmup_schedule():
    from ignite.engine import Engine

    from e3relax.engine.handlers import attach_ema

    model = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(0.0)

    def step(engine, batch):  # the "trained" weight at iteration t is t
        with torch.no_grad():
            model.weight.fill_(float(engine.state.iteration))

    trainer = Engine(step)
    ema = attach_ema(trainer, model, {"decay": 0.999, "warmup": True, "warmup_offset": 10.0})
    momenta = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _track(engine):  # registered after the EMA update
        momenta.append(engine.state.ema_momentum)

    trainer.run([0] * 20000, max_epochs=1)
    expect = 0.0
    for t, m in enumerate(momenta, start=1):
        assert m == pytest.approx(max(0.001, 9.0 / (10.0 + t)))
        expect = (1 - m) * expect + m * t
    assert momenta[0] == pytest.approx(9 / 11) and momenta[-1] == pytest.approx(0.001)
    assert float(ema.ema_model.weight) == pytest.approx(expect, rel=1e-9)
    # the average follows recent weights: far from the plain mean of all iterates (10000)
    assert float(ema.ema_model.weight) > 18000
