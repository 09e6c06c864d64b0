"""Structure matching cannot hang: degenerate predicted cells are rejected, every pair has a time limit.

The pair is the built-in test structure gen0_00263 (GaN, 2 atoms) with the near-degenerate cell
an EGNN predicted for it (3.41 / 4.52 / 1.66 A, 35 / 24 / 59 degrees), on which one strict
StructureMatcher call once ran for 91 s.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from e3relax import metrics
from e3relax.metrics import LOOSE, STRICT, MatcherSettings, degenerate_cell, match_metrics


@pytest.fixture(scope="module")
def pair():
    from e3relax.datasets import builtin

    raw = next(p for p in builtin.load() if p.id == "gen0_00263")
    return raw.unrelaxed, raw.relaxed


def predicted(unrelaxed, gamma: float = 59.0) -> Structure:
    lattice = Lattice.from_parameters(3.41, 4.52, 1.66, 35.0, 24.0, gamma)
    return Structure(lattice, unrelaxed.get_chemical_symbols(), unrelaxed.get_scaled_positions())


@pytest.mark.parametrize("gamma", [59.0, 58.99])
def test_degenerate_prediction_is_rejected_fast(pair, gamma, caplog):
    unrelaxed, relaxed = pair
    pred = predicted(unrelaxed, gamma)
    assert degenerate_cell(pred.lattice.matrix, len(pred))
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="e3relax.metrics"):
        out = match_metrics([pred], [relaxed], ids=["gen0_00263"])
    assert time.perf_counter() - t0 < 5.0
    assert out["degenerate"].tolist() == [True]
    assert not out["match_strict"][0] and not out["match_loose"][0]
    assert out["spg_pred"][0] == 0 and not out["spg_match"][0]
    assert "gen0_00263" in caplog.text


def test_real_cells_are_not_degenerate(pair):
    unrelaxed, relaxed = pair
    for atoms in (unrelaxed, relaxed):
        assert degenerate_cell(atoms.cell.array, len(atoms)) == ""
    # a skewed but valid (non-reduced) cell of normal volume passes too
    skew = np.array([[3.0, 0, 0], [9.0, 3.0, 0], [0, 0, 3.0]])
    assert degenerate_cell(skew, 2) == ""
    assert degenerate_cell(np.full((3, 3), np.nan), 2)
    # the unrelaxed input against its relaxed label is compared as usual
    out = match_metrics([unrelaxed, relaxed], [relaxed, relaxed])
    assert not out["degenerate"].any() and out["match_strict"][1] and out["match_loose"][1]


class _SlowMatcher:
    def get_rms_dist(self, pred, ref):
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30.0:  # a pure-Python loop, like Lattice.find_all_mappings
            pass
        return (0.0, 0.0)


@dataclass(frozen=True)
class _SlowSettings(MatcherSettings):
    def matcher(self):
        return _SlowMatcher()


def test_pair_that_runs_out_of_time_counts_as_unmatched(pair, caplog):
    unrelaxed, relaxed = pair
    slow = _SlowSettings("slow", ltol=0.2, stol=0.3, angle_tol=5.0)
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="e3relax.metrics"):
        out = match_metrics([unrelaxed, relaxed], [relaxed, relaxed], settings=(slow, LOOSE), time_limit=0.3,
                            ids=["a", "b"])
    assert time.perf_counter() - t0 < 10.0
    assert out["match_timeout"].tolist() == [True, True]
    assert not out["match_slow"].any()
    assert out["match_loose"][1]  # the other setting still ran
    assert "within 0.3 s" in caplog.text


def test_time_limit_restores_an_outer_timer():
    import signal

    fired = []
    old = signal.signal(signal.SIGALRM, lambda *a: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with metrics._time_limit(5.0):
            pass
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < left <= 0.5
        time.sleep(0.7)
        assert fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_strict_and_loose_defaults_unchanged():
    assert (STRICT.ltol, STRICT.stol, STRICT.angle_tol) == (0.05, 0.05, 1.0)
    assert (LOOSE.ltol, LOOSE.stol, LOOSE.angle_tol) == (0.2, 0.3, 5.0)
