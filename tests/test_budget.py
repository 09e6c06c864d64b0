"""The engine's one time-budget handler: stops on time, validates first, continues across a resume."""
from __future__ import annotations

import pytest
from ignite.engine import Engine, Events

from e3relax.engine import budget as B


class FakeClock:
    """One second per iteration of the engine that reads it."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _engine(clock: FakeClock) -> tuple[Engine, list[int]]:
    def step(engine, batch):
        clock.t += 1.0

    engine, epochs = Engine(step), []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epochs.append(e.state.iteration))
    return engine, epochs


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setitem(B.CLOCKS, "wall", c)
    return c


def test_stops_after_the_budget_and_validates_first(clock):
    engine, epochs = _engine(clock)
    budget = B.TimeBudget(7.5, clock="wall").attach(engine)
    engine.run(range(5), max_epochs=10)
    assert engine.state.iteration == 8 and budget.hit
    assert epochs == [5, 8]  # the regular epoch end, then the one fired before stopping
    assert budget.used() == pytest.approx(8.0)


def test_a_resumed_run_continues_the_same_budget(clock):
    first, _ = _engine(clock)
    budget = B.TimeBudget(10.0, clock="wall").attach(first)
    first.run(range(4), max_epochs=1)
    state = budget.state_dict()
    assert state["used"] == pytest.approx(4.0) and not state["hit"]
    second, _ = _engine(clock)
    resumed = B.TimeBudget(10.0, clock="wall").attach(second)
    resumed.load_state_dict(state)
    second.run(range(100), max_epochs=1)
    assert second.state.iteration == 6 and resumed.hit  # 4 + 6 = 10 seconds in all
    assert state["wall_used"] == pytest.approx(4.0) and resumed.wall_used() == pytest.approx(10.0)
    assert B.TimeBudget.summary(resumed) == {"time_limit_hit": True, "time_used_s": pytest.approx(10.0),
                                             "wall_used_s": pytest.approx(10.0)}
    assert B.TimeBudget.summary(None) == {"time_limit_hit": False, "time_used_s": None, "wall_used_s": None}


def test_wall_time_of_a_run_resumed_from_an_older_checkpoint_is_unknown(clock):
    engine, _ = _engine(clock)
    budget = B.TimeBudget(10.0, clock="wall").attach(engine)
    budget.load_state_dict({"used": 3.0, "hit": False, "clock": "wall"})  # no "wall_used": written before it was kept
    engine.run(range(2), max_epochs=1)
    assert budget.used() == pytest.approx(5.0) and budget.wall_used() is None


def test_no_stop_within_budget(clock):
    engine, _ = _engine(clock)
    budget = B.TimeBudget(1000.0, clock="wall").attach(engine)
    engine.run(range(5), max_epochs=2)
    assert engine.state.iteration == 10 and not budget.hit


def test_cpu_is_the_default_clock_and_bad_settings_name_their_key():
    assert B.TimeBudget(1.0).clock == "cpu" and B.CLOCKS["cpu"] is not B.CLOCKS["wall"]
    with pytest.raises(ValueError, match="schedule.time_clock: 'sundial'"):
        B.TimeBudget(1.0, clock="sundial")
    with pytest.raises(ValueError, match="schedule.time_limit_s"):
        B.TimeBudget(0.0)
    b = B.TimeBudget(5.0, clock="wall")
    with pytest.raises(ValueError, match="started with 'cpu'"):
        b.load_state_dict({"used": 1.0, "hit": False, "clock": "cpu"})


def test_validation_history_round_trip():
    trainer, evaluator = Engine(lambda e, b: None), Engine(lambda e, b: None)
    hist = B.ValidationHistory("mae_pos").attach(trainer, evaluator)
    for it, val in ((10, 0.5), (20, 0.4)):
        trainer.state.iteration = it
        evaluator.state.metrics = {"mae_pos": val, "shape_dev": 2 * val, "mae_vol": 3 * val, "dummy/mae_pos": 1.0}
        evaluator.fire_event(Events.COMPLETED)
    assert hist.history == [(10, 0.5), (20, 0.4)]
    assert [r["mae_vol"] for r in hist.records] == pytest.approx([1.5, 1.2]) and "dummy/mae_pos" not in hist.records[0]
    assert 0 <= hist.records[0]["cpu_s"] <= hist.records[1]["cpu_s"]
    state = hist.state_dict()
    again = B.ValidationHistory("mae_pos")
    again.load_state_dict(state)
    assert again.history == hist.history and again.records == hist.records
    assert again.cpu_used() >= state["cpu_used"]  # a resumed run counts on from the saved CPU time
