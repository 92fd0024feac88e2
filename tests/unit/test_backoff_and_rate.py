"""Retry backoff and the sliding-window rate limit, against tables and independent checkers."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from janus.audit import max_in_window
from janus.core.backoff import backoff_ceiling, retry_delay
from janus.core.policy import RateLimit, RetryPolicy
from janus.core.rate import SlidingWindow

# -- backoff ------------------------------------------------------------------

STANDARD = RetryPolicy(base_delay=1.0, max_delay=60.0)

CEILINGS = [
    # (policy, failures, ceiling)
    (STANDARD, 0, 0.0),  # no failure yet: no delay
    (STANDARD, -3, 0.0),  # nonsense counts are treated as none
    (STANDARD, 1, 1.0),  # first failure: base
    (STANDARD, 2, 2.0),  # doubles
    (STANDARD, 3, 4.0),
    (STANDARD, 4, 8.0),
    (STANDARD, 5, 16.0),
    (STANDARD, 6, 32.0),
    (STANDARD, 7, 60.0),  # 64 is capped at 60
    (STANDARD, 8, 60.0),  # and stays there
    (STANDARD, 1024, 60.0),  # past 2**1023, where 2.0**n would overflow
    (STANDARD, 10**9, 60.0),  # huge counts do not overflow
    (STANDARD, 10**100, 60.0),  # not even absurd ones
    (RetryPolicy(base_delay=0.5, max_delay=3.0), 3, 2.0),  # another base
    (RetryPolicy(base_delay=0.5, max_delay=3.0), 4, 3.0),  # another cap
    (RetryPolicy(base_delay=0.0, max_delay=0.0), 50, 0.0),  # no delay at all
    (RetryPolicy(base_delay=5.0, max_delay=5.0), 9, 5.0),  # constant delay
    (RetryPolicy(base_delay=1e10, max_delay=1e20), 10**6, 1e20),  # base × 2**1000 is inf: capped, no error
    (RetryPolicy(base_delay=1e300, max_delay=1e308), 2000, 1e308),  # near the top of the floats
]


@pytest.mark.parametrize(("policy", "failures", "ceiling"), CEILINGS)
def test_backoff_ceiling(policy: RetryPolicy, failures: int, ceiling: float) -> None:
    assert backoff_ceiling(policy, failures) == ceiling


retry_policies = st.builds(
    lambda base, extra, jitter: RetryPolicy(base_delay=base, max_delay=base + extra, jitter=jitter),
    base=st.floats(0.0, 100.0),
    extra=st.floats(0.0, 3600.0),
    jitter=st.floats(0.0, 1.0) | st.sampled_from([0.0, 0.5, 1.0]),
)


@settings(max_examples=300, deadline=None)
@given(policy=retry_policies, failures=st.integers(0, 2000), seed=st.integers(0, 2**32))
def test_retry_delay_lies_within_the_jitter_band(policy: RetryPolicy, failures: int, seed: int) -> None:
    ceiling = backoff_ceiling(policy, failures)
    delay = retry_delay(policy, failures, random.Random(seed))
    low = ceiling * (1.0 - policy.jitter)
    # random.uniform(a, b) is a + (b - a) * r: allow the one rounding step that may cross b or a.
    assert math.nextafter(low, -math.inf) <= delay <= math.nextafter(ceiling, math.inf)
    assert ceiling <= policy.max_delay
    # Same seed, same delay: the RNG is the only source of randomness.
    assert retry_delay(policy, failures, random.Random(seed)) == delay


def test_retry_delay_without_jitter_is_the_ceiling() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=60.0, jitter=0.0)
    rng = random.Random(0)
    assert [retry_delay(policy, k, rng) for k in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_retry_delay_spreads_over_the_whole_band() -> None:
    # Not a constant, not one end: 2000 draws for d = 8 s with jitter 0.5 cover [4, 8] evenly.
    rng = random.Random(1234)
    draws = [retry_delay(STANDARD, 4, rng) for _ in range(2000)]
    assert 4.0 <= min(draws) < 4.1
    assert 7.9 < max(draws) <= 8.0
    assert sum(draws) / len(draws) == pytest.approx(6.0, abs=0.1)


# -- SlidingWindow: table -----------------------------------------------------

# Steps: ("record", t) | ("room", t, expected) | ("free_at", t, expected) | ("restore", [t...]) | ("len", n)
Step = tuple[object, ...]

WINDOW_SCENARIOS: list[tuple[str, RateLimit, list[Step]]] = [
    (
        "fills up, then frees exactly T after the oldest (half-open windows)",
        RateLimit(count=2, window=10.0),
        [
            ("room", 0.0, 2),
            ("free_at", 0.0, 0.0),  # room now: free at once
            ("record", 0.0),
            ("room", 0.0, 1),
            ("record", 5.0),
            ("room", 5.0, 0),
            ("free_at", 5.0, 10.0),  # when the stamp at 0 leaves
            ("room", math.nextafter(10.0, 0.0), 0),  # an instant before: still full
            ("room", 10.0, 1),  # [0, 10) no longer contains 10
            ("free_at", 10.0, 10.0),
            ("record", 10.0),
            ("free_at", 10.0, 15.0),  # now the stamp at 5 is the oldest
            ("len", 2),
        ],
    ),
    (
        "several admissions at one instant leave together",
        RateLimit(count=3, window=1.0),
        [
            ("record", 2.0),
            ("record", 2.0),
            ("record", 2.0),
            ("room", 2.5, 0),
            ("free_at", 2.5, 3.0),
            ("room", 3.0, 3),
            ("len", 0),  # pruned
        ],
    ),
    (
        "restore sorts out-of-order history and merges it with what is there",
        RateLimit(count=3, window=10.0),
        [
            ("record", 4.0),
            ("restore", [7.0, 1.0, 5.0]),
            ("len", 4),
            ("room", 7.0, -1),  # more than COUNT after a takeover: negative room, no admission
            ("free_at", 7.0, 14.0),  # two must leave: 1 at 11, 4 at 14
            ("room", 11.0, 0),
            ("room", 14.0, 1),
            ("free_at", 14.0, 14.0),
        ],
    ),
    (
        "restored history older than the window is forgotten",
        RateLimit(count=1, window=5.0),
        [
            ("restore", [0.0, 1.0, 2.0]),
            ("room", 7.0, 1),  # 2 + 5 <= 7: all gone
            ("len", 0),
        ],
    ),
    (
        "a window that is not a binary fraction: 0.1 + 0.2 is not 0.3",
        RateLimit(count=1, window=0.2),
        [
            ("record", 0.1),
            ("free_at", 0.1, 0.1 + 0.2),  # the same sum the audit computes: 0.30000000000000004
            ("room", 0.3, 0),  # 0.3 < 0.1 + 0.2 in floats: [0.1, 0.1 + 0.2) still holds it
            ("room", 0.1 + 0.2, 1),  # and at the sum itself it has left
        ],
    ),
]


@pytest.mark.parametrize(
    ("limit", "steps"),
    [(limit, steps) for _, limit, steps in WINDOW_SCENARIOS],
    ids=[s[0] for s in WINDOW_SCENARIOS],
)
def test_sliding_window(limit: RateLimit, steps: list[Step]) -> None:
    window = SlidingWindow(limit, limit.window)
    for step in steps:
        match step:
            case ("record", float() as at):
                window.record(at)
            case ("restore", list() as stamps):
                window.restore(stamps)
            case ("room", float() as now, int() as expected):
                assert window.room(now) == expected, step
            case ("free_at", float() as now, float() as expected):
                assert window.free_at(now) == expected, step
            case ("len", int() as expected):
                assert len(window) == expected, step
            case _:
                raise AssertionError(f"bad step {step}")


# -- SlidingWindow: properties ------------------------------------------------


def brute_max_in_window(times: Sequence[float], window: float) -> int:
    """The most `times` in one [t, t + window) with t an element of `times`: O(n²), no sorting, no bisect."""
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


def held_at(times: Sequence[float], window: float, now: float) -> int:
    """How many past admissions the window at `now` still holds: those with a + window > now."""
    return sum(1 for a in times if a <= now and a + window > now)


windows = st.sampled_from([0.1, 0.2, 0.3, 1.0, 1 / 3, 2.5, 10.0])
steps = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.1, 0.2, 1 / 3, 1.0]) | st.floats(0.0, 3.0),  # time advance (0: same instant)
        st.integers(1, 4),  # admissions attempted at that instant
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(count=st.integers(1, 5), window=windows, start=st.sampled_from([0.0, 1.7e9, 0.1]), schedule=steps)
def test_sliding_window_never_exceeds_its_limit(
    count: int, window: float, start: float, schedule: list[tuple[float, int]]
) -> None:
    limit = RateLimit(count=count, window=window)
    sliding = SlidingWindow(limit, limit.window)
    admitted: list[float] = []
    now = start
    for advance, attempts in schedule:
        now += advance
        for _ in range(attempts):
            room = sliding.room(now)
            # Exact, not merely safe: room is COUNT minus what a brute-force count says is held.
            assert room == count - held_at(admitted, window, now)
            if room <= 0:
                break
            sliding.record(now)
            admitted.append(now)
        assert len(sliding) == held_at(admitted, window, now)

        # free_at is exact: room at that instant, none an instant before.
        free = sliding.free_at(now)
        assert free >= now
        probe = SlidingWindow(limit, limit.window)
        probe.restore(admitted)
        if free > now:
            assert probe.room(math.nextafter(free, -math.inf)) == 0
        assert probe.room(free) >= 1

    worst = max_in_window(admitted, window)
    assert worst == brute_max_in_window(admitted, window)
    assert worst <= count


@settings(max_examples=300, deadline=None)
@given(
    times=st.lists(st.sampled_from([0.0, 0.1, 0.2, 0.3, 1.0, 1.1]) | st.floats(-10.0, 10.0), max_size=30),
    window=st.sampled_from([0.1, 0.2, 1.0]) | st.floats(1e-6, 20.0),
)
def test_max_in_window_agrees_with_brute_force(times: list[float], window: float) -> None:
    assert max_in_window(times, window) == brute_max_in_window(times, window)


@settings(max_examples=100, deadline=None)
@given(count=st.integers(1, 5), window=windows, stamps=st.lists(st.floats(0.0, 20.0), max_size=12))
def test_restore_in_any_order_equals_recording_in_order(
    count: int, window: float, stamps: list[float]
) -> None:
    limit = RateLimit(count=count, window=window)
    recorded, restored = SlidingWindow(limit, limit.window), SlidingWindow(limit, limit.window)
    for stamp in sorted(stamps):
        recorded.record(stamp)
    restored.restore(random.Random(len(stamps)).sample(stamps, len(stamps)))
    for now in sorted([max(stamps, default=0.0), 20.0, 20.0 + window / 2, 20.0 + window, 21.0, 40.0]):
        assert restored.room(now) == recorded.room(now)
        free = restored.free_at(now)
        assert free == recorded.free_at(now)
        # Exact even when a takeover restored more than COUNT: room at free_at, none just before.
        before, at = SlidingWindow(limit, limit.window), SlidingWindow(limit, limit.window)
        before.restore(stamps)
        at.restore(stamps)
        if free > now:
            assert before.room(math.nextafter(free, -math.inf)) <= 0
        assert at.room(free) >= 1
