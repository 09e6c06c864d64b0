"""Progress that reads well in a terminal and in a log file: the one helper behind every progress bar.

On a terminal :func:`progress` is a tqdm bar. When the output is not a terminal (a log file, a pipe,
``nohup``) it is a :class:`LineProgress` instead: a plain line through ``logging`` every few percent
or every 30 s, never a carriage-return update. :func:`attach_progress` does the same for an Ignite
engine (Ignite's ``ProgressBar`` on a terminal).

    bar = progress(total=len(files), desc="predict", unit="structure")
    for f in files:
        ...
        bar.update(1)
    bar.close()
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Callable, Iterable, Iterator

__all__ = ["LineProgress", "progress", "attach_progress", "is_terminal"]

log = logging.getLogger("e3relax.progress")

#: a plain progress line at least every this many percent ...
EVERY_PERCENT = 10.0
#: ... or every this many seconds, whichever comes first
EVERY_SECONDS = 30.0


def is_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (default stderr, where progress goes) is an interactive terminal."""
    stream = stream or sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _seconds(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


class LineProgress:
    """tqdm-like counter that logs ``desc: n/total unit (p%), elapsed, ~left`` as plain lines.

    A line is written when the count has advanced by ``every_percent`` of the total since the
    last line, when ``every_seconds`` have passed, and at the end. Supports ``update``, ``close``,
    iteration, ``n``, ``total`` and use as a context manager, like tqdm.
    """

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", every_percent: float = EVERY_PERCENT, every_seconds: float = EVERY_SECONDS,
                 logger: logging.Logger | None = None, disable: bool = False, initial: int = 0, **_: Any) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.every_percent, self.every_seconds = every_percent, every_seconds
        self.log, self.disable = logger or log, disable
        self.n = self._last_n = int(initial)
        self._closed = False
        self._t0 = self._last_t = time.monotonic()

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def line(self) -> str:
        elapsed = time.monotonic() - self._t0
        if self.total:
            pct = 100.0 * self.n / self.total
            left = elapsed / self.n * (self.total - self.n) if self.n else None
            eta = f", about {_seconds(left)} left" if left is not None and self.n < self.total else ""
            return f"{self.desc}: {self.n}/{self.total} {self.unit} ({pct:.0f}%), {_seconds(elapsed)}{eta}"
        return f"{self.desc}: {self.n} {self.unit}, {_seconds(elapsed)}"

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.disable:
            return
        now = time.monotonic()
        step = self.total * self.every_percent / 100.0 if self.total else float("inf")
        if self.n - self._last_n >= max(step, 1e-9) or now - self._last_t >= self.every_seconds:
            self._emit(now)

    def _emit(self, now: float) -> None:
        self.log.info("%s", self.line())
        self._last_n, self._last_t = self.n, now

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:  # tqdm compatibility
        pass

    def close(self) -> None:
        if not self._closed and not self.disable and self.n != self._last_n:
            self._emit(time.monotonic())
        self._closed = True


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, initial: int = 0, **tqdm_kwargs: Any) -> Any:
    """A tqdm bar on a terminal, a :class:`LineProgress` otherwise (same calls: update, close, iterate)."""
    if disable or not is_terminal():
        return LineProgress(iterable, total=total, desc=desc, unit=unit, disable=disable, initial=initial)
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, **tqdm_kwargs)


def attach_progress(engine: Any, desc: str, unit: str = "batches",
                    output_transform: Callable[[Any], dict] | None = None) -> None:
    """Progress of an Ignite engine: Ignite's ``ProgressBar`` on a terminal, plain lines otherwise."""
    if is_terminal():
        from ignite.handlers import ProgressBar

        kwargs = {"output_transform": output_transform} if output_transform else {}
        ProgressBar(persist=False, desc=desc).attach(engine, **kwargs)
        return
    from ignite.engine import Events

    state: dict[str, LineProgress] = {}

    def start(eng: Any) -> None:
        total = eng.state.epoch_length * (eng.state.max_epochs or 1) if eng.state.epoch_length else None
        state["bar"] = LineProgress(total=total, desc=desc, unit=unit)
        state["bar"].n = state["bar"]._last_n = int(eng.state.iteration)

    engine.add_event_handler(Events.STARTED, start)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda eng: state["bar"].update(1))
    engine.add_event_handler(Events.COMPLETED, lambda eng: state["bar"].close())
