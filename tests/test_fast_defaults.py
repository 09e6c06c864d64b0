"""The engine's speed defaults: denormals flushed, compiled kernels on long runs, eager fallback."""
from __future__ import annotations

import logging

import pytest
import torch

from e3relax.engine.config import ConfigError, resolve_config
from e3relax.engine.trainer import AUTO_COMPILE_STEPS, compile_kernels_wanted
from e3relax.nn import common


def _config(**schedule) -> dict:
    return resolve_config({"schedule": schedule})


def test_auto_compiles_long_runs_only():
    cpu = torch.device("cpu")
    assert resolve_config({})["compile_kernels"] == "auto" and resolve_config({})["flush_denormal"] is True
    assert not compile_kernels_wanted(_config(epoch_length=10, max_epochs=5), cpu)
    assert compile_kernels_wanted(_config(epoch_length=100, max_epochs=AUTO_COMPILE_STEPS // 100), cpu)
    assert compile_kernels_wanted({**_config(epoch_length=1, max_epochs=1), "compile_kernels": True}, cpu)
    assert not compile_kernels_wanted({**_config(epoch_length=100, max_epochs=100), "compile_kernels": False}, cpu)
    with pytest.raises(ConfigError, match="compile_kernels: expected true, false or auto, got 'yes'"):
        compile_kernels_wanted({**_config(), "compile_kernels": "yes"}, cpu)


def test_a_kernel_that_does_not_compile_runs_eagerly(caplog):
    @common.kernel
    def _toy_kernel(x):
        return 2 * x

    def broken(*args):
        raise RuntimeError("no C compiler\nmore detail")

    common._COMPILED["_toy_kernel"] = broken
    try:
        with caplog.at_level(logging.WARNING, logger="e3relax.nn.common"):
            assert torch.equal(_toy_kernel(torch.ones(2)), torch.full((2,), 2.0))
            assert torch.equal(_toy_kernel(torch.ones(2)), torch.full((2,), 2.0))
        warnings = [r for r in caplog.records if "_toy_kernel does not compile here" in r.getMessage()]
        assert len(warnings) == 1 and "RuntimeError: no C compiler" in warnings[0].getMessage()
        assert "_toy_kernel" not in common._COMPILED
    finally:
        common._KERNELS.pop("_toy_kernel", None)
        common._COMPILED.pop("_toy_kernel", None)


def test_flushing_denormals_zeroes_them():
    torch.set_flush_denormal(False)
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # below float32's smallest normal, 1.18e-38
    assert float(tiny * 1.0) != 0.0
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    try:
        assert float(tiny * 1.0) == 0.0
    finally:
        torch.set_flush_denormal(False)
