"""User errors of every ``e3relax`` sub-command: one line on stderr naming what, where and why, exit
status 2, no traceback (``--debug`` shows it); a run folder is never replaced without ``--overwrite``;
an empty or unreadable training or validation set fails before the first step."""
from __future__ import annotations

import pytest
import torch

import test_engine_toy as toy
from e3relax.cli.main import main
from e3relax.datasets.writer import write_shard


@pytest.fixture()
def dbs(tmp_path):
    return {"train": toy.write_lmdb(tmp_path / "train.lmdb", range(8)),
            "val": toy.write_lmdb(tmp_path / "val.lmdb", range(100, 104))}


def write_config(path, train, val=None, model="{name: engine_toy_model, hidden_channels: 8}", extra=""):
    val_line = f", val: {val}" if val is not None else ""
    path.write_text(f"model: {model}\nloss: {{name: engine_toy_loss}}\ndtype: float64\ndevice: cpu\n"
                    f"data: {{train: {train}{val_line}, batch_size: 4}}\n"
                    f"schedule: {{epoch_length: 2, max_epochs: 1}}\n"
                    f"log: {{progress_bar: false, figures: false, tensorboard: false}}\n{extra}")
    return path


def error_line(capsys, argv, status=2) -> str:
    """Run the command; check the status and that stderr ends in one ``e3relax ...: error:`` line."""
    assert main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no message on stderr"
    last = err[-1]
    assert "Traceback" not in "\n".join(err)
    assert last.startswith(f"e3relax {argv[0]}"), last
    return last


def test_run_folder_is_not_overwritten(tmp_path, dbs, capsys):
    cfg = write_config(tmp_path / "run.yaml", dbs["train"], dbs["val"])
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--run-dir", str(run)]) == 0
    before = (run / "checkpoints" / "last.pt").read_bytes()
    capsys.readouterr()
    line = error_line(capsys, ["train", "--config", str(cfg), "--run-dir", str(run), "seed=5"])
    assert f"run folder {run} already holds a run" in line
    assert f"--resume {run}" in line and "--overwrite" in line
    assert (run / "checkpoints" / "last.pt").read_bytes() == before  # untouched
    assert "seed: 0" in (run / "config.yaml").read_text()
    assert main(["train", "--config", str(cfg), "--run-dir", str(run), "seed=5", "--overwrite"]) == 0
    assert "seed: 5" in (run / "config.yaml").read_text()
    assert (run / "checkpoints" / "last.pt").read_bytes() != before
    line = error_line(capsys, ["train", "--resume", str(run), "--overwrite"])
    assert "give one of them" in line


def test_config_errors_name_the_file_and_key(tmp_path, dbs, capsys):
    bad_type = write_config(tmp_path / "a.yaml", dbs["train"],
                            model='{name: engine_toy_model, hidden_channels: "abc"}')
    line = error_line(capsys, ["train", "--config", str(bad_type)])
    assert line == (f"e3relax train: error: config {bad_type}: model.hidden_channels: expected an integer, "
                    "got 'abc' (str)")
    good = write_config(tmp_path / "b.yaml", dbs["train"])
    line = error_line(capsys, ["train", "--config", str(good), "optim.lr=fast"])
    assert line == "e3relax train: error: override optim.lr=fast: optim.lr: expected a number, got 'fast' (str)"
    line = error_line(capsys, ["train", "--config", str(good), "schedule.epoch_length=2.5"])
    assert "schedule.epoch_length: expected an integer, got 2.5 (float)" in line
    line = error_line(capsys, ["train", "--config", str(good), "optim.lrr=1"])
    assert "unknown config key 'optim.lrr'" in line
    unknown = write_config(tmp_path / "c.yaml", dbs["train"], model="{name: engine_toy_model, width: 3}")
    assert "model.width: 'engine_toy_model' has no option 'width'; its options: hidden_channels, num_layers" \
        in error_line(capsys, ["train", "--config", str(unknown)])
    (tmp_path / "broken.yaml").write_text("model: {name: [\n")
    line = error_line(capsys, ["train", "--config", str(tmp_path / "broken.yaml")])
    assert f"config file {tmp_path / 'broken.yaml'} is not valid YAML at line 2" in line
    line = error_line(capsys, ["train", "--config", str(tmp_path / "missing.yaml")])
    assert line == f"e3relax train: error: config file {tmp_path / 'missing.yaml'} does not exist"


def test_debug_shows_the_traceback(tmp_path, dbs):
    cfg = write_config(tmp_path / "b.yaml", dbs["train"])
    from e3relax.engine.config import ConfigError

    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        main(["train", "--config", str(cfg), "optim.lr=fast", "--debug"])
    with pytest.raises(ConfigError):
        main(["--debug", "train", "--config", str(cfg), "optim.lr=fast"])


def test_bad_datasets_fail_before_training(tmp_path, dbs, capsys):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "zero.lmdb").write_bytes(b"")
    nometa = write_shard(tmp_path / "nometa.lmdb", [b"x"])
    empty = write_shard(tmp_path / "empty.lmdb", [], metadata=toy_meta(0))
    cases = {
        str(tmp_path / "nowhere.lmdb"): f"data.train: dataset path {tmp_path / 'nowhere.lmdb'} does not exist",
        str(tmp_path / "empty_dir"): f"{tmp_path / 'empty_dir'}: folder has no shard_*.lmdb files",
        str(tmp_path / "zero.lmdb"): f"{tmp_path / 'zero.lmdb'}: empty file (0 bytes), not an LMDB database",
        str(nometa): f"{nometa}: no metadata record; the database is incomplete",
        str(empty): f"training set data.train ({empty}) holds no structures",
    }
    for path, message in cases.items():
        cfg = write_config(tmp_path / "t.yaml", path, dbs["val"])
        line = error_line(capsys, ["train", "--config", str(cfg), "--run-dir", str(tmp_path / "r"), "--overwrite"])
        assert message in line, (path, line)
    for path, message in {str(empty): f"validation set data.val ({empty}) holds no structures",
                          str(tmp_path / "zero.lmdb"): "empty file (0 bytes)"}.items():
        cfg = write_config(tmp_path / "v.yaml", dbs["train"], path)
        line = error_line(capsys, ["train", "--config", str(cfg), "--run-dir", str(tmp_path / "r"), "--overwrite"])
        assert message in line, (path, line)
        assert not (tmp_path / "r" / "checkpoints").exists()  # failed before the first step


def toy_meta(n):
    from e3relax.datasets.lmdb_format import make_metadata

    return make_metadata(natoms=[2] * n, ids=[f"x{i}" for i in range(n)], graph=None, source={}, split="val",
                         shard=0, num_shards=1, split_records=n)


class Evil:
    """Unpickling this would run code: a safe load refuses it."""


def test_evaluate_and_data_errors(tmp_path, dbs, capsys):
    cfg = write_config(tmp_path / "run.yaml", dbs["train"], dbs["val"])
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--run-dir", str(run)]) == 0
    best = run / "checkpoints" / "best.pt"
    (tmp_path / "zero.lmdb").write_bytes(b"")
    (tmp_path / "empty_dir").mkdir()
    line = error_line(capsys, ["evaluate", "--checkpoint", str(best), "--data", str(tmp_path / "none.lmdb"),
                               "--device", "cpu"])
    assert line == f"e3relax evaluate: error: --data: dataset path {tmp_path / 'none.lmdb'} does not exist"
    line = error_line(capsys, ["evaluate", "--checkpoint", str(best), "--data", str(tmp_path / "zero.lmdb")])
    assert "empty file (0 bytes), not an LMDB database" in line
    torch.save({"format_version": 1, "config": {}, "x": Evil()}, tmp_path / "evil.pt")
    line = error_line(capsys, ["evaluate", "--checkpoint", str(tmp_path / "evil.pt"), "--data", str(dbs["val"]),
                               "--device", "cpu", "--out", str(tmp_path / "e")])
    assert f"{tmp_path / 'evil.pt'} is not a checkpoint written by e3relax" in line
    assert "test_cli_errors.Evil" in line and "weights_only" not in line and "False" not in line
    line = error_line(capsys, ["evaluate", "--checkpoint", str(tmp_path / "no.pt"), "--data", str(dbs["val"]),
                               "--device", "cpu", "--out", str(tmp_path / "e")])
    assert "no.pt" in line
    for argv, message in (
            (["data", "bench", str(tmp_path / "zero.lmdb")], "empty file (0 bytes)"),
            (["data", "bench", str(tmp_path / "empty_dir")], "folder has no shard_*.lmdb files"),
            (["data", "bench", str(tmp_path / "none.lmdb")], "does not exist"),
            (["data", "info", str(tmp_path / "none.lmdb")], "does not exist"),
            (["data", "info", str(tmp_path / "empty_dir")], "no .lmdb database here")):
        line = error_line(capsys, argv)
        assert line.startswith(f"e3relax data {argv[1]}: error: ") and message in line, line
