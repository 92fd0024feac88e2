"""The limit on bad results set aside per results queue (janus/core/flood.py)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from janus.audit import max_in_window
from janus.core.flood import BadInputLimit
from janus.core.policy import RateLimit


def test_within_the_limit_the_queue_is_served_at_once() -> None:
    limit = BadInputLimit(RateLimit(count=100, window=1.0))
    assert limit.charge(60, now=10.0) == 10.0
    assert limit.charge(39, now=10.5) == 10.5  # 99 of 100: room for one more
    assert limit.charge(0, now=10.6) == 10.6  # a slice with no bad result costs nothing


def test_over_the_limit_the_queue_waits_until_the_window_has_room() -> None:
    limit = BadInputLimit(RateLimit(count=100, window=1.0))
    assert limit.charge(128, now=10.0) == 11.0  # a whole flooded slice: a window's pause
    assert limit.charge(128, now=11.0) == 12.0  # served then, the next slice: again
    # A trickle under the limit after the flood is served at once again once the window passed.
    assert limit.charge(5, now=13.5) == 13.5


def test_a_clock_going_back_does_not_reopen_the_window() -> None:
    limit = BadInputLimit(RateLimit(count=10, window=1.0))
    assert limit.charge(10, now=5.0) == 6.0
    assert limit.charge(0, now=4.0) == 6.0  # taken as 5.0: still a second after the slice


@settings(max_examples=400, deadline=None)
@given(
    count=st.integers(1, 20),
    window=st.sampled_from([0.1, 1 / 3, 1.0, 2.5]),
    largest_slice=st.integers(1, 30),
    schedule=st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.05, 0.1, 1.0])
            | st.floats(0.0, 3.0),  # wait after the queue may be served
            st.floats(0.0, 1.0),  # share of the largest slice that is bad
        ),
        max_size=80,
    ),
)
def test_bad_results_stay_within_the_limit_plus_one_slice(
    count: int, window: float, largest_slice: int, schedule: list[tuple[float, float]]
) -> None:
    """A caller that serves the queue no earlier than `charge` says, a slice of at most S at a
    time: in every window, at most count - 1 + S bad results. And it is never held longer than
    the limit needs: at the time given, the window has room."""
    limit = BadInputLimit(RateLimit(count=count, window=window))
    charged: list[float] = []
    may_serve = 1000.0
    for wait, share in schedule:
        now = may_serve + wait
        bad = math.floor(share * largest_slice)
        may_serve = limit.charge(bad, now)
        charged += [now] * bad
        assert may_serve >= now
        in_window = sum(1 for t in charged if t + window > may_serve)
        assert in_window < count, "held past the moment the window had room"
        if may_serve > now:
            # ...and not a moment less: just before, the window was still full.
            before = math.nextafter(may_serve, -math.inf)
            assert sum(1 for t in charged if t <= before < t + window) >= count
    assert max_in_window(charged, window) <= count - 1 + largest_slice
