"""Overall progress of a comparison: what it will do and roughly how long, then runs done and time left."""
from __future__ import annotations

import math
import statistics
import time
from typing import Any, Mapping, Sequence

__all__ = ["Progress", "estimate_run_s", "estimate_chgnet_s", "minutes"]

#: rough costs on 2 CPU cores, only for the start-of-run estimate (the progress lines re-estimate
#: from the runs actually finished)
_TEST_S_FIXED = 15.0
_TEST_S_PER_STRUCTURE = 0.3
_CHGNET_S_PER_STRUCTURE = 20.0


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


class Progress:
    """Overall progress of a comparison: runs done, time spent, time left.

    The time left is re-estimated as runs finish, from what each finished run cost in training
    seconds of its own process (``time_used_s`` of its record, earlier sessions included), so a run
    resumed near its end does not make the rest look short; it never exceeds the budget per run.
    """

    def __init__(self, total: int, run_s: float | None, chgnet_s: float, t_start: float, jobs: int = 1) -> None:
        self.total, self.run_s, self.chgnet_s, self.t_start = total, run_s, chgnet_s, t_start
        self.jobs = max(1, int(jobs))
        self.done = self.skipped = 0
        self.costs: list[float] = []  # training seconds of each finished run (its own clock)
        self.t_runs = time.perf_counter()

    def plan(self, runs: Sequence[Any], seeds: Sequence[int], n_test: int, chgnet: int, budget: str) -> str:
        what = (f"train and test {len(runs)} model(s) x {len(seeds)} seed(s) = {self.total} run(s) "
                f"({', '.join(r.label for r in runs)}) with {budget}; score each on {n_test} test structures")
        if self.skipped:
            what += f"; {self.skipped} of them finished earlier and are kept"
        if chgnet > 0:
            what += f"; then CHGNet + FIRE on {chgnet} test structures ({self.jobs} process(es))"
        if self.jobs > 1:
            what += f"; {self.jobs} runs at a time, one process each"
        if self.run_s is None:
            return what + "; no time budget, so the duration is estimated after the first run"
        rest = f"for the {self.total - self.done} left" if self.skipped else "in all"
        return what + f"; expected about {minutes(self._left())} {rest}"

    def skip(self, record: Mapping[str, Any] | None = None) -> None:
        self.done += 1
        self.skipped += 1
        self._count(record)

    def step(self, record: Mapping[str, Any] | None = None) -> str:
        self.done += 1
        self._count(record)
        elapsed = time.perf_counter() - self.t_start
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.done}/{self.total} runs done ({pct:.0f}%), {minutes(elapsed)} elapsed, "
                f"about {minutes(self._left())} left")

    def before_chgnet(self) -> str:
        return (f"training runs done in {minutes(time.perf_counter() - self.t_start)}; CHGNet phase next, "
                f"about {minutes(self.chgnet_s)}")

    def _count(self, record: Mapping[str, Any] | None) -> None:
        used = (record or {}).get("time_used_s")
        if used is not None and math.isfinite(float(used)):
            self.costs.append(float(used) + _TEST_S_FIXED)

    def _per_run(self) -> float:
        """Seconds one more run is expected to take on its core."""
        if self.costs:
            per_run = statistics.median(self.costs)
            return min(per_run, self.run_s) if self.run_s else per_run
        if self.run_s is not None:
            return self.run_s
        ran = self.done - self.skipped  # no budget and no record: the wall pace of this session
        return (time.perf_counter() - self.t_runs) * self.jobs / ran if ran else 0.0

    def _left(self) -> float:
        waves = -(-(self.total - self.done) // self.jobs)
        return waves * self._per_run() + self.chgnet_s


def estimate_run_s(wall_s: float | None, n_test: int) -> float | None:
    """Rough wall seconds of one (model, seed): the training time budget (wall or CPU seconds, one
    core each) plus testing (None without a time budget: no estimate before the first run)."""
    if not wall_s:
        return None
    return float(wall_s) + _TEST_S_PER_STRUCTURE * n_test + _TEST_S_FIXED


def estimate_chgnet_s(num_structures: int, jobs: int = 1) -> float:
    """Rough wall seconds of the CHGNet phase (two FIRE relaxations per structure, ``jobs`` processes)."""
    if num_structures <= 0:
        return 0.0
    return 2 * _CHGNET_S_PER_STRUCTURE * -(-num_structures // max(1, int(jobs)))
