"""How much of a results queue's bad input the leader handles per window.

Every bad result (unknown job, stale attempt, garbage) costs the leader CPU to consume,
decode and copy to janus.rejected, mostly in the AMQP client (benchmarks/flood.py). A
worker that floods its results queue would take that CPU from every other dependency. So each results queue has a `limit` on the bad
results set aside from it: once a slice takes it over the limit, the queue is not served
again until the window has room, and the rest of the flood waits in the broker (durable,
unacked, nothing lost). Good results in the same queue wait behind the flood: that queue
is the flooding workers' own (per-dependency routing and users, docs/security.md), so the
cost falls on the dependency that floods, not on the others.

The bound, for a caller that serves the queue only at or after `charge`'s answer and
takes at most S bad results per serving: in every window of `limit.window` seconds at
most `limit.count - 1 + S` are charged (the last slice is decoded before it is known to
be bad). tests/unit/test_flood.py checks it over random schedules.
"""

from __future__ import annotations

from janus.core.policy import RateLimit
from janus.core.rate import SlidingWindow


class BadInputLimit:
    """The bad results set aside from one results queue inside the window of `limit`."""

    __slots__ = ("_latest", "_window")

    def __init__(self, limit: RateLimit) -> None:
        self._window = SlidingWindow(limit, limit.window)  # counts what it is charged, nothing else
        self._latest = float("-inf")  # SlidingWindow needs non-decreasing times

    def charge(self, count: int, now: float) -> float:
        """`count` bad results of the queue were set aside at `now`: when it may be served again
        (`now` itself while the window still has room)."""
        now = self._latest = max(now, self._latest)
        if count:
            self._window.record_many(now, count)
        return self._window.free_at(now)
