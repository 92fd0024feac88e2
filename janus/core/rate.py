"""Exact sliding-window rate limiting.

A sliding *log* rather than a fixed window or a token bucket: the invariant we
promise is "at most COUNT in every window of length T", measured by anyone, at any
offset. Fixed windows allow 2×COUNT across a boundary; token buckets allow COUNT +
refill. The log costs O(COUNT) memory per limit, which is bounded by configuration,
and O(1) amortised per admission.

A window counts admissions over a *span*: T for a limit that counts admissions, and
T + admission_ttl for one that counts starts (the default), the least span that keeps
the starts workers make within COUNT per T (`RateLimit.admission_window` proves it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from itertools import repeat

from janus.core.policy import RateLimit


class SlidingWindow:
    """Timestamps of one rate limit that still fall inside its span: at most `limit.count`
    in any half-open window of `span` seconds.

    Callers must pass non-decreasing `now` values (the scheduler clamps its clock),
    otherwise a pruned timestamp could re-enter a window after a backward clock jump.
    """

    __slots__ = ("_stamps", "limit", "span")

    def __init__(self, limit: RateLimit, span: float) -> None:
        if span <= 0:
            raise ValueError("a window's span must be positive")
        self.limit = limit
        self.span = span
        self._stamps: deque[float] = deque()

    def _prune(self, now: float) -> None:
        # A stamp s lies in some half-open window [x, x + span) containing `now` only if
        # s + span > now (written as the sum, not now - span, so that float rounding matches
        # the audit exactly).
        window = self.span
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

    def free_at(self, now: float, count: int | None = None) -> float:
        """The earliest time at which one more admission fits (under `count` instead of the
        limit's COUNT if given: the recovery ramp's scaled limit)."""
        self._prune(now)
        excess = len(self._stamps) - (self.limit.count if count is None else count)
        if excess < 0:
            return now
        # The (excess+1)-th oldest stamp must leave the window.
        return self._stamps[excess] + self.span

    def stamps(self) -> list[float]:
        return list(self._stamps)

    def clear_at(self) -> float:
        """When every admission recorded so far has left the window (-inf if none)."""
        return self._stamps[-1] + self.span if self._stamps else float("-inf")

    def __len__(self) -> int:
        return len(self._stamps)


def admission_windows(limits: Sequence[RateLimit], admission_ttl: float) -> list[SlidingWindow]:
    """One window per limit, each over the span its meaning needs (`RateLimit.admission_window`)."""
    return [SlidingWindow(limit, limit.admission_window(admission_ttl)) for limit in limits]


def same_windows(windows: Sequence[SlidingWindow], limits: Sequence[RateLimit], admission_ttl: float) -> bool:
    """Do these windows already count `limits` over the spans `admission_ttl` gives them?"""
    return len(windows) == len(limits) and all(
        window.limit == limit and window.span == limit.admission_window(admission_ttl)
        for window, limit in zip(windows, limits, strict=False)
    )


def rebuild_windows(
    windows: Sequence[SlidingWindow], limits: Sequence[RateLimit], admission_ttl: float
) -> list[SlidingWindow]:
    """New windows for new limits (a policy change), holding the admissions the old ones held.

    Every window recorded the same admissions and pruned them by its own span, so the one
    with the longest span holds all that any of them holds, repeats included (several
    admissions at one instant are several stamps). A longer span than before starts with
    what that window still held; a TTL made shorter counts admissions made under the longer
    one over the shorter span.
    """
    longest = max(windows, key=lambda window: window.span, default=None)
    stamps = longest.stamps() if longest is not None else []
    rebuilt = admission_windows(limits, admission_ttl)
    for window in rebuilt:
        window.restore(stamps)
    return rebuilt
