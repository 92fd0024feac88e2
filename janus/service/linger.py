"""Whether the admission loop should wait a moment before its next tick, for it to grow.

A linger makes the next statement bigger: PostgreSQL's cost is mostly per statement
(benchmarks/tick_statement.py). But a linger after every busy tick also sits in every job's
path at a moderate rate, where it buys nothing: the loop then idles anyway, waiting for
deliveries. So a tick of `busy` or more messages is followed by a linger only when it pays:
  - the loop hardly idled in the last window (under `idle_share` of it): the pipeline runs
    short of CPU, and fewer, bigger statements save some; or
  - messages arrive fast enough that a linger gathers `enough` of them (rate x linger).
Pure: the clock is handed in (the loop gives a monotonic one, the tests a fake).
"""

from __future__ import annotations

from collections.abc import Callable


class Linger:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        linger: float = 0.005,
        enough: int = 4,
        busy: int = 4,
        window: float = 0.1,
        idle_share: float = 0.1,
    ) -> None:
        self._clock = clock
        self.linger = linger
        self._enough = enough
        self._busy = busy
        self._window = window
        self._idle_share = idle_share
        self._start = clock()
        self._idle = 0.0  # seconds spent waiting for deliveries in the current window
        self._count = 0  # messages taken in the current window
        # The last full window's figures; until one is complete, the loop counts as idle.
        self._last_idle = 1.0
        self._last_rate = 0.0

    def idled(self, seconds: float) -> None:
        """The loop waited this long for deliveries (or its next wakeup)."""
        self._idle += seconds
        self._roll()

    def took(self, count: int) -> None:
        """A tick took this many messages."""
        self._count += count
        self._roll()

    def wanted(self, batch: int) -> bool:
        """After a tick of `batch` messages: should the next one wait `linger` first?"""
        if batch < self._busy:
            return False
        self._roll()
        return self._last_idle < self._idle_share or self._last_rate * self.linger >= self._enough

    def _roll(self) -> None:
        now = self._clock()
        elapsed = now - self._start
        if elapsed < self._window:
            return
        self._last_idle = min(self._idle / elapsed, 1.0)
        self._last_rate = self._count / elapsed
        self._start, self._idle, self._count = now, 0.0, 0
