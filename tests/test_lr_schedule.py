"""Learning-rate warmup and cosine decay (over steps or over the time budget), and their errors."""
from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine

from e3relax.engine.config import ConfigError
from e3relax.engine.handlers import LRSchedule


def _opt(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_then_cosine_to_min_lr():
    s = LRSchedule(_opt(), "cosine", lr=1e-3, min_lr=1e-5, warmup_steps=4, total_steps=104)
    assert [s.value(i) for i in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert s.value(4) == pytest.approx(1e-3)
    assert s.value(54) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert s.value(104) == pytest.approx(1e-5) and s.value(10_000) == pytest.approx(1e-5)


def test_plateau_schedule_only_warms_up():
    s = LRSchedule(_opt(), "plateau", lr=1e-3, min_lr=1e-8, warmup_steps=2, total_steps=100)
    assert s.value(0) == pytest.approx(5e-4) and s.value(1) == pytest.approx(1e-3) and s.value(2) is None


class _Budget:
    seconds = 100.0

    def __init__(self, used: float) -> None:
        self._used = used

    def used(self) -> float:
        return self._used


def test_cosine_follows_the_time_budget_when_it_is_further_along():
    s = LRSchedule(_opt(), "cosine", lr=1.0, min_lr=0.0, warmup_steps=0, total_steps=10**6, budget=_Budget(50.0))
    assert s.value(10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    s.budget = _Budget(100.0)
    assert s.value(10) == pytest.approx(0.0)


def test_the_trainer_sees_the_rate_before_each_step():
    opt = _opt()
    seen = []
    engine = Engine(lambda e, b: seen.append(opt.param_groups[0]["lr"]))
    LRSchedule(opt, "cosine", lr=1.0, min_lr=0.0, warmup_steps=2, total_steps=6).attach(engine)
    engine.run(range(6), max_epochs=1)
    assert seen == pytest.approx([0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))])


def test_unknown_schedule_names_its_key():
    with pytest.raises(ConfigError, match="schedule.lr_schedule: expected one of plateau, cosine, got 'linear'"):
        LRSchedule(_opt(), "linear", 1.0, 0.0, 0, 10)
