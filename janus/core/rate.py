"""Exact sliding-window rate limiting.

A sliding *log* rather than a fixed window or a token bucket: the invariant we
promise is "at most COUNT admissions in every window of length T", measured by
anyone, at any offset. Fixed windows allow 2×COUNT across a boundary; token
buckets allow COUNT + refill. The log costs O(COUNT) memory per limit, which is
bounded by configuration, and O(1) amortised per admission.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import repeat

from janus.core.policy import RateLimit


class SlidingWindow:
    """Admission timestamps of one rate limit that still fall inside its window.

    Callers must pass non-decreasing `now` values (the scheduler clamps its clock),
    otherwise a pruned timestamp could re-enter a window after a backward clock jump.
    """

    __slots__ = ("_stamps", "limit")

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._stamps: deque[float] = deque()

    def _prune(self, now: float) -> None:
        # A stamp s lies in some half-open window [x, x + T) containing `now` only if s + T > now
        # (written as the sum, not now - T, so that float rounding matches the audit exactly).
        window = self.limit.window
        stamps = self._stamps
        while stamps and stamps[0] + window <= now:
            stamps.popleft()

    def room(self, now: float) -> int:
        """How many admissions may happen at `now`."""
        self._prune(now)
        return self.limit.count - len(self._stamps)

    def record(self, at: float) -> None:
        self._stamps.append(at)

    def record_many(self, at: float, count: int) -> None:
        """`count` admissions at `at` (the scheduler records a batch of one decision at once)."""
        self._stamps.extend(repeat(at, count))

    def restore(self, stamps: Iterable[float]) -> None:
        """Reload history after a restart or a takeover (in any order: the log is kept sorted)."""
        self._stamps = deque(sorted([*self._stamps, *stamps]))

    def free_at(self, now: float) -> float:
        """The earliest time at which one more admission fits."""
        self._prune(now)
        excess = len(self._stamps) - self.limit.count
        if excess < 0:
            return now
        # The (excess+1)-th oldest stamp must leave the window.
        return self._stamps[excess] + self.limit.window

    def stamps(self) -> list[float]:
        return list(self._stamps)

    def clear_at(self) -> float:
        """When every admission recorded so far has left the window (-inf if none)."""
        return self._stamps[-1] + self.limit.window if self._stamps else float("-inf")

    def __len__(self) -> int:
        return len(self._stamps)
