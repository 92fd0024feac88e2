"""Exact sliding-window rate limiting.

A sliding *log* rather than a fixed window or a token bucket: the invariant we
promise is "at most COUNT in every window of length T", measured by anyone, at any
offset. Fixed windows allow 2×COUNT across a boundary; token buckets allow COUNT +
refill. The log costs O(COUNT) memory per limit, which is bounded by configuration,
and O(1) amortised per admission.

A window counts admissions over a *span*: T for a limit that counts admissions, and
T + admission_ttl for one that counts starts (the default), the least span that keeps
the starts workers make within COUNT per T (`RateLimit.admission_window` proves it). A result
that says how long its call took ends the admission's place earlier, T after the latest time the
call can have begun (`SlidingWindow.trim`, docs/protocol.md); never before T after the admission.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from itertools import repeat

from janus.core.policy import RateLimit


class SlidingWindow:
    """The admissions of one rate limit that still hold a place in its span: at most
    `limit.count` in any half-open window of `span` seconds.

    An admission made at `at` holds its place until `at + span`, or until the earlier end that a
    result allows (`trim`: the call had started by then, docs/protocol.md). The places are kept
    sorted by their end, so the oldest to leave is first: a list with a moving head (cheaper to
    trim in than a deque), compacted once the head has passed half of it.

    Callers must pass non-decreasing `now` values (the scheduler clamps its clock),
    otherwise a pruned timestamp could re-enter a window after a backward clock jump.
    """

    __slots__ = ("_head", "_places", "limit", "span")

    def __init__(self, limit: RateLimit, span: float) -> None:
        if span <= 0:
            raise ValueError("a window's span must be positive")
        self.limit = limit
        self.span = span
        self._places: list[tuple[float, float]] = []  # (end, admitted at), sorted
        self._head = 0  # places before it have ended

    def _prune(self, now: float) -> None:
        # A place ends at s + span (written as the sum, not now - span, so that float rounding
        # matches the audit exactly), or earlier once trimmed.
        places, head = self._places, self._head
        size = len(places)
        while head < size and places[head][0] <= now:
            head += 1
        if head > 32 and head * 2 > size:
            del places[:head]
            head = 0
        self._head = head

    def room(self, now: float) -> int:
        """How many admissions may happen at `now`."""
        places, head = self._places, self._head
        if head < len(places) and places[head][0] <= now:  # `_prune`'s first test: a place ended
            self._prune(now)
            head = self._head
        return self.limit.count - (len(places) - head)

    def record(self, at: float) -> None:
        self._places.append((at + self.span, at))

    def record_many(self, at: float, count: int) -> None:
        """`count` admissions at `at` (the scheduler records a batch of one decision at once).
        Their end is the latest yet: `at` never decreases, and a trimmed end is only earlier."""
        if count == 1:
            self._places.append((at + self.span, at))
        else:
            self._places.extend(repeat((at + self.span, at), count))

    def trim(self, at: float, started_by: float) -> None:
        """The admission made at `at` started its call by `started_by` (a result told so): its
        place ends T after that rather than at the end of its span, but never before `at + T`
        (a call starts no earlier than its admission) nor later than before. A window counting
        admissions (span T) keeps its places as they are."""
        untrimmed = at + self.span
        end = (started_by if started_by > at else at) + self.limit.window  # min/max without the calls
        if end >= untrimmed:
            return
        places, old, new = self._places, (untrimmed, at), (end, at)
        index = bisect_left(places, old, self._head)
        if index == len(places) or places[index] != old:
            return  # no longer held (its span passed), or never recorded here (a rebuilt window)
        # The place only moves earlier (new < old): shift the places between its new and its old
        # index by one, rather than delete it and insert it again (two moves of the whole tail).
        # It moves by the admissions of at most an admission_ttl: look just before it first.
        low = index - 8
        if low < self._head or places[low] > new:
            low = self._head
        moved_to = bisect_right(places, new, low, index)
        places[moved_to + 1 : index + 1] = places[moved_to:index]
        places[moved_to] = new

    def restore(self, stamps: Iterable[float]) -> None:
        """Reload history after a restart or a takeover (in any order: the log is kept sorted).
        Admission times only: a trimmed place comes back whole, which errs on the safe side."""
        live = self._places[self._head :]
        self._places = sorted([*live, *((at + self.span, at) for at in stamps)])
        self._head = 0

    def free_at(self, now: float, count: int | None = None) -> float:
        """The earliest time at which one more admission fits (under `count` instead of the
        limit's COUNT if given: the recovery ramp's scaled limit)."""
        self._prune(now)
        held = len(self._places) - self._head
        excess = held - (self.limit.count if count is None else count)
        if excess < 0:
            return now
        # The (excess+1)-th place to end must end.
        return self._places[self._head + excess][0]

    def stamps(self) -> list[float]:
        """The admission times of the places held (not yet pruned), in order."""
        return sorted(at for _, at in self._places[self._head :])

    def clear_at(self) -> float:
        """When every admission recorded so far has left the window (-inf if none)."""
        return self._places[-1][0] if len(self._places) > self._head else float("-inf")

    def __len__(self) -> int:
        return len(self._places) - self._head


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
