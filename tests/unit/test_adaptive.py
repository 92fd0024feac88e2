"""The adaptive limits (core/adaptive.py): AIMD on throttles for the rate, a latency gradient for
concurrency; alone, through the Scheduler, and against simulated APIs on a virtual clock."""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from janus.adaptive_config import AdaptiveConfig
from janus.core.adaptive import AdaptiveConcurrency, AdaptiveRate, AdaptiveState
from janus.core.decisions import WaitReason
from janus.core.jobs import Admission
from janus.core.policy import AdaptivePolicy, DependencyPolicy, RateLimit
from janus.core.rebuild import Snapshot
from janus.core.scheduler import Scheduler
from janus.simulate.adaptive_api import LatencyApi, SlidingApi, policy, run

RATE = AdaptivePolicy(max_rate=1000.0)


def _rate_after(signals: list[bool], policy: AdaptivePolicy = RATE, *, ceiling: float = math.inf) -> float:
    """The rate after one result per 0.3 s, each admitted just before it, with the rate in use."""
    rate = AdaptiveRate(policy, ceiling, 0.0)
    now = 0.0
    for throttled in signals:
        rate.record(now, math.ceil(rate.rate))  # the limit is in use
        now += 0.3
        rate.observe(admitted_at=now - 0.01, throttled=throttled, now=now)
    return rate.rate


def test_one_burst_of_throttles_lowers_the_rate_once() -> None:
    # Helidon #9542's failure: every throttled sample of one overload cut the limit again.
    rate = AdaptiveRate(RATE, math.inf, 0.0)
    start = rate.rate
    rate.slow_start = False
    for i in range(50):
        rate.observe(admitted_at=0.5, throttled=True, now=1.0 + i * 0.001)
    assert rate.rate == pytest.approx(start * RATE.decrease)
    assert rate.reason == "lowered after 50 throttled results"  # one decrease answered them all
    # Calls admitted within a window of the decrease were made while the dependency still
    # counted the old rate: their throttles lower nothing, and are said.
    rate.observe(admitted_at=1.5, throttled=True, now=1.6)
    assert rate.rate == pytest.approx(start * RATE.decrease)
    assert rate.reason == "lowered after 51 throttled results"
    rate.observe(admitted_at=2.1, throttled=True, now=2.2)  # a new round: lowered again
    assert rate.rate == pytest.approx(start * RATE.decrease**2)


def test_slow_start_doubles_until_the_first_throttle_then_adds() -> None:
    rate = AdaptiveRate(RATE, math.inf, 0.0)
    assert rate.rate == 10.0  # TCP's initial window of 10
    rate.record(0.0, 10)
    rate.observe(admitted_at=0.1, throttled=False, now=1.0)
    assert rate.rate == 20.0
    rate.observe(admitted_at=1.1, throttled=True, now=1.2)
    assert rate.rate == 10.0  # halved: the last clean rate
    assert not rate.slow_start
    rate.record(2.5, 10)
    rate.observe(admitted_at=2.5, throttled=False, now=2.6)
    assert rate.rate == 11.0  # a step of 5 % of 20 is under 1 call a window: 1
    rate.observe(admitted_at=2.7, throttled=True, now=2.8)
    assert rate.rate == pytest.approx(11.0 * RATE.decrease)  # out of slow start: x decrease


def test_an_unused_rate_does_not_grow() -> None:
    # RFC 7661: a limit the traffic did not reach says nothing about a higher one.
    rate = AdaptiveRate(RATE, math.inf, 0.0)
    rate.record(0.0, 1)
    for i in range(1, 20):
        rate.observe(admitted_at=i - 0.5, throttled=False, now=float(i))
    assert rate.rate == 10.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=60), st.floats(min_value=0.5, max_value=200.0))
def test_the_rate_stays_within_its_bounds_and_the_static_ceiling(signals: list[bool], ceiling: float) -> None:
    bounds = AdaptivePolicy(min_rate=0.5, max_rate=100.0)
    value = _rate_after(signals, bounds, ceiling=ceiling)
    assert bounds.min_rate <= value <= max(bounds.min_rate, min(100.0, ceiling)) + 1e-9


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=40), st.floats(min_value=0.0, max_value=3.0))
def test_the_rate_is_monotone_in_its_signals(signals: list[bool], gap: float) -> None:
    # From any state the signals lead to, a throttled result never leaves the rate higher than
    # a clean one would. (Over whole histories no round-based controller is monotone: a throttle
    # earlier may end a round earlier, and the next round may add a step sooner.)
    rate = AdaptiveRate(RATE, math.inf, 0.0)
    now = 0.0
    for throttled in signals:
        rate.record(now, math.ceil(rate.rate))
        now += 0.3
        rate.observe(admitted_at=now - 0.01, throttled=throttled, now=now)
    clean, throttled = copy.deepcopy(rate), copy.deepcopy(rate)
    clean.observe(admitted_at=now + gap - 0.01, throttled=False, now=now + gap)
    throttled.observe(admitted_at=now + gap - 0.01, throttled=True, now=now + gap)
    assert throttled.rate <= clean.rate <= rate.rate * 2.0 + 1e-9
    assert throttled.rate <= rate.rate


def _latency_after(durations: list[float], *, held: int = 100) -> float:
    limit = AdaptiveConcurrency(AdaptivePolicy(max_concurrency=100, min_samples=1), math.inf, 0.0)
    for i, duration in enumerate(durations):
        limit.held(held)
        for _ in range(100):  # one round each: enough calls end it, the rest belong to the one before
            limit.observe(admitted_at=i * 1.1, duration=duration, now=i * 1.1 + 1.05)
    return limit.limit


def test_the_concurrency_grows_near_its_floor_and_shrinks_as_latency_rises() -> None:
    grown = _latency_after([0.1] * 6)
    assert grown > 5
    shrunk = _latency_after([0.1] * 6 + [0.6])
    assert shrunk == pytest.approx(grown * 0.5)  # 1.5 x floor / 6 x floor, at most halved
    assert _latency_after([0.1] * 6 + [0.11]) > grown  # below the middle of the tolerance: grows
    assert _latency_after([0.1] * 6 + [0.12]) == grown  # above it, within the tolerance: holds


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.001, max_value=10.0), max_size=40), st.integers(0, 39))
def test_the_concurrency_is_bounded_and_monotone_in_latency(durations: list[float], slower: int) -> None:
    value = _latency_after(durations)
    assert 1 <= value <= 100
    if durations:
        worse = [*durations]
        worse[slower % len(durations)] *= 3.0
        # A slower call never leaves the limit higher at that round; later rounds compare to a
        # floor that call may have raised, so only the round itself is compared.
        prefix = slower % len(durations) + 1
        assert _latency_after(worse[:prefix]) <= _latency_after(durations[:prefix]) + 1e-9


def _steady(seconds: list, start: int, end: int) -> tuple[float, float]:
    """(throttled share, successes per second) over [start, end)."""
    part = [s for s in seconds if start <= s.at < end]
    ok = sum(s.ok for s in part)
    throttled = sum(s.throttled for s in part)
    return throttled / max(1, ok + throttled), ok / len(part)


def test_aimd_finds_the_capacity_and_follows_it() -> None:
    # The scenario, on a virtual clock: C = 40 per 1 s sliding window, 20 from 40 s,
    # 40 again from 70 s.
    def capacity(now: float) -> int:
        return 20 if 40 <= now < 70 else 40

    seconds = run(policy(AdaptivePolicy(max_rate=1000.0)), seconds=110, sliding=SlidingApi(capacity))
    share, goodput = _steady(seconds, 10, 40)
    assert share <= 0.05, share
    assert goodput >= 0.8 * 40, goodput
    share, goodput = _steady(seconds, 50, 70)
    assert share < 0.05, share
    assert goodput >= 0.8 * 20, goodput
    share, goodput = _steady(seconds, 100, 110)
    assert share < 0.05, share
    assert goodput > 0.8 * 40, goodput
    # The stated band on a steady capacity: between decrease x C and C plus two steps.
    limits = [s.rate_limit for s in seconds if 15 <= s.at < 40 and s.rate_limit is not None]
    assert min(limits) >= 0.75 * 40 * 0.9, min(limits)
    assert max(limits) <= 40 * 1.2, max(limits)


def test_the_gradient_settles_near_the_knee() -> None:
    api = LatencyApi(knee=10, base=0.1)
    seconds = run(policy(AdaptivePolicy(max_concurrency=200)), seconds=60, latency=api)
    limits = [s.concurrency_limit for s in seconds if s.at >= 30 and s.concurrency_limit is not None]
    assert 6 <= sum(limits) / len(limits) <= 16, limits
    late = sorted(latency for s in seconds if s.at >= 30 for latency in s.latencies)
    p99 = late[int(0.99 * (len(late) - 1))]
    unloaded = 0.1 * 1.1  # its p99 alone: base latency, +-10 % of noise
    assert p99 <= 2 * unloaded, p99


def _throttled(core: Scheduler, job: Admission, now: float) -> None:
    """The call of admission `job` comes back throttled (429) at `now`."""
    core.on_result(
        job_id=job.job_id,
        attempt=job.attempt,
        success=False,
        error="429",
        retry_after=None,
        now=now,
        throttled=True,
    )


def _throttle_one(core: Scheduler, *, admitted_at: float, now: float) -> None:
    """One admission at `admitted_at` whose call comes back throttled at `now`."""
    job_id = f"j{admitted_at}"
    core.submit(job_id=job_id, dependency="api", scope="s", payload=None, now=admitted_at)
    [job] = [job for job in core.admit(admitted_at).admissions if job.job_id == job_id]
    _throttled(core, job, now)


def test_the_scheduler_blocks_on_the_adaptive_rate_and_says_so() -> None:
    dependency = DependencyPolicy(
        name="api", lease_timeout=60.0, adaptive=AdaptivePolicy(max_rate=100.0, initial_rate=10.0)
    )
    core = Scheduler([dependency], random.Random(1))
    for i in range(50):
        core.submit(job_id=f"j{i}", dependency="api", scope="s", payload=None, now=0.0)
    first = core.admit(0.0)
    assert len(first.admissions) == 2  # the bucket holds a quarter second: 2.5 calls
    assert first.blocked[0].reason is WaitReason.RATE
    assert first.blocked[0].limit.startswith("adaptive rate 10/1s")
    assert first.next_wakeup == pytest.approx(0.05)  # half a token left: a twentieth of a second
    _throttled(core, first.admissions[0], now=0.2)
    assert core.adaptive_views()["api"].rate == pytest.approx(5.0)  # out of slow start: halved
    [state] = core.drain_adaptive()
    assert state.rate == pytest.approx(5.0)
    assert core.drain_adaptive() == []
    blocked = core.admit(0.25).blocked[0]
    assert blocked.limit == "adaptive rate 5/1s, lowered 0 s ago after 1 throttled result", blocked.limit


def test_a_static_limit_stays_a_hard_ceiling() -> None:
    dependency = DependencyPolicy(
        name="api",
        rate_limits=(RateLimit(count=5, window=1.0),),
        admission_ttl=0.1,
        concurrency=3,
        adaptive=AdaptivePolicy(max_rate=100.0, max_concurrency=50, initial_concurrency=50),
    )
    core = Scheduler([dependency], random.Random(1))
    view = core.adaptive_views()["api"]
    assert view.rate == 5.0
    assert view.concurrency == 3


def test_a_new_leader_starts_from_the_last_limits() -> None:
    dependency = DependencyPolicy(
        name="api", lease_timeout=60.0, adaptive=AdaptivePolicy(max_rate=100.0, max_concurrency=40)
    )
    state = AdaptiveState(
        dependency="api",
        rate=38.0,
        concurrency=12.0,
        slow_start=False,
        reason="lowered after 3 throttled results",
        changed_at=98.0,
    )
    core = Scheduler.rebuilt([dependency], Snapshot(adaptive=[state]), 100.0, random.Random(1))
    view = core.adaptive_views()["api"]
    assert (view.rate, view.concurrency) == (38.0, 12)
    assert view.describe_rate(100.0) == "adaptive rate 38/1s, lowered 2 s ago after 3 throttled results"


def test_a_policy_without_adaptive_drops_it_and_one_with_it_adds_it() -> None:
    plain = DependencyPolicy(name="api", lease_timeout=60.0)
    adaptive = DependencyPolicy(name="api", lease_timeout=60.0, adaptive=AdaptivePolicy(max_rate=100.0))
    core = Scheduler([plain], random.Random(1))
    assert core.adaptive_views() == {}
    core.update_policy(adaptive)
    assert core.adaptive_views()["api"].rate == 10.0
    core.update_policy(plain)
    assert core.adaptive_views() == {}


def _knee_rounds(knee: int, base: float, rounds: int = 60) -> list[tuple[int, float]]:
    """(cap, latency) per round of a concurrency limit always in use, against an API that
    answers in `base` up to `knee` calls at once and in base x (n / knee)^3 past it."""
    limit = AdaptiveConcurrency(AdaptivePolicy(max_concurrency=1000), math.inf, 0.0)
    out = []
    now = 0.0
    for _ in range(rounds):
        cap = limit.cap
        latency = base * max(1.0, cap / knee) ** 3
        out.append((cap, latency))
        limit.held(cap)
        start = now
        for i in range(max(math.ceil(limit.limit), 5)):  # the calls a slow start round needs
            now = start + limit.policy.window + i * 1e-3
            limit.observe(admitted_at=start, duration=latency, now=now)
        now += 1e-3
    return out


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=200), st.floats(min_value=0.001, max_value=5.0))
def test_slow_start_lands_at_most_sqrt_knee_past_a_steep_knee(knee: int, base: float) -> None:
    # A doubling slow start lands up to twice past the knee, where a cubic API takes 8x its
    # floor (the e2e p99 of 4.1x); growth by sqrt(limit) lands at most about sqrt(knee) past it.
    rounds = _knee_rounds(knee, base)
    band = 1.0 + (AdaptivePolicy(max_rate=1.0).tolerance - 1.0) * 0.5  # growth stops above this x floor
    # The limit of the last round in the band is under its most calls + 1 (the cap is its floor).
    highest = knee * band ** (1 / 3) + 1.0
    assert max(cap for cap, _ in rounds) <= highest + math.sqrt(highest) + 1e-9
    assert max(cap for cap, _ in rounds) >= min(knee, 1000) * 0.5  # it does find the knee


def test_slow_start_ends_at_the_first_round_that_leaves_the_floor() -> None:
    # Vegas: a round in the tolerance but above its growth band ends slow start without a
    # decrease, so the next rounds grow by Gradient2's small steps, not by slow start's.
    limit = AdaptiveConcurrency(AdaptivePolicy(max_concurrency=100, min_samples=1), math.inf, 0.0)

    def round_of(i: int, duration: float) -> None:
        limit.held(limit.cap)
        for _ in range(math.ceil(limit.limit)):  # the calls of the whole limit end a slow start round
            limit.observe(admitted_at=i * 1.1, duration=duration, now=i * 1.1 + 1.05)

    for i, duration in enumerate([0.1, 0.1, 0.1]):
        round_of(i, duration)
    assert limit.slow_start
    held = limit.limit
    round_of(3, 0.12)  # 1.2x: within the tolerance of 1.25, above the growth band of 1.125
    assert limit.slow_start is False
    assert limit.limit == held  # held, not lowered
    round_of(4, 0.1)
    assert limit.limit == pytest.approx(held + 0.2 * math.sqrt(held))


def _baseline_rounds(
    base: Callable[[float], float], *, knee: int = 10, seconds: float = 300.0, interval: float = 30.0
) -> list[tuple[float, int, float, float]]:
    """(time, cap, floor, limit after it) per round of a limit always in use, on a virtual clock, against an
    API that answers in base(now) up to `knee` calls at once and base x (n / knee)^3 past it."""
    policy = AdaptivePolicy(max_concurrency=1000, floor_interval=interval)
    limit = AdaptiveConcurrency(policy, math.inf, 0.0)
    out = []
    now = 0.0
    while now < seconds:
        cap = limit.cap
        latency = base(now) * max(1.0, cap / knee) ** 3
        limit.held(cap)
        start = now
        for i in range(max(math.ceil(limit.limit), policy.min_samples)):
            now = start + max(policy.window, latency) + i * 1e-3
            limit.observe(admitted_at=start, duration=latency, now=now)
        now += 1e-3
        out.append((now, cap, limit.floor or 0.0, limit.limit))
    return out


@pytest.mark.parametrize("later", [0.3, 0.04])
def test_a_lasting_change_of_the_baseline_is_followed_within_the_interval(later: float) -> None:
    # Envoy's minRTT recalculation: every floor_interval the floor is taken again from calls at
    # min_concurrency. Without it a floor that only creeps up (0.2 % a round) leaves a slower
    # dependency's limit at its minimum for hundreds of rounds.
    rounds = _baseline_rounds(lambda now: 0.1 if now < 100.0 else later)
    settled = [(cap, floor) for at, cap, floor, _ in rounds if 60.0 <= at < 100.0]
    assert all(floor == pytest.approx(0.1, rel=0.05) for _, floor in settled)  # and its slow drift
    # Followed within one interval and a few rounds (each lasts a window or a call, at most 1.2 s).
    after = [(cap, floor) for at, cap, floor, _ in rounds if at >= 100.0 + 30.0 + 10.0]
    assert all(floor == pytest.approx(later, rel=0.05) for _, floor in after)
    late = [cap for at, cap, _, _ in rounds if at >= 200.0]
    assert 6 <= sum(late) / len(late) <= 12  # back near the knee of 10


def test_the_floor_is_taken_at_min_concurrency_and_the_limit_comes_back() -> None:
    rounds = _baseline_rounds(lambda now: 0.1, seconds=120.0)
    measured = [i for i, (_, cap, _, _) in enumerate(rounds) if i > 10 and cap == 1]
    assert len(measured) == 3  # a round at min_concurrency every interval (30 s), after slow start
    for i in measured:
        before, measuring, after = rounds[i - 1], rounds[i], rounds[i + 1]
        assert measuring[3] == before[3]  # the limit in force is kept...
        assert after[1] == math.floor(before[3])  # ...and comes back
    never = _baseline_rounds(lambda now: 0.1, seconds=120.0, interval=0.0)
    assert [i for i, (_, cap, _, _) in enumerate(never) if i > 10 and cap == 1] == []


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        (None, 60.0),  # the default: Envoy's minRTT interval
        ("30s", 30.0),
        ("0s", 0.0),  # never
        (0, 0.0),
    ],
)
def test_floor_interval_is_read_from_the_file(written: object, seconds: float) -> None:
    keys = {"max_concurrency": 10} | ({} if written is None else {"floor_interval": written})
    assert AdaptiveConfig.model_validate(keys).to_policy().floor_interval == seconds


@pytest.mark.parametrize("written", ["-1s", "soon", True])
def test_a_bad_floor_interval_is_refused(written: object) -> None:
    with pytest.raises(ValidationError, match="floor_interval"):
        AdaptiveConfig.model_validate({"max_concurrency": 10, "floor_interval": written})


@pytest.mark.parametrize("last_admitted", [None, 95.0])
def test_adaptation_turned_on_for_a_running_dependency_ignores_the_static_limits_throttles(
    last_admitted: float | None,
) -> None:
    """`janus apply` turning adaptation on rebuilds the core with no limits of record: a throttle
    of a call made under the static limits, or while the dependency's window still counts them,
    says nothing about the adaptive rate (a flaky end-to-end run halved it at once and left slow
    start, so it crawled to the capacity by additive steps)."""
    dependency = DependencyPolicy(
        name="api", lease_timeout=60.0, adaptive=AdaptivePolicy(max_rate=100.0, initial_rate=10.0)
    )
    earlier = {"api": [("s", 99.5)]} if last_admitted is not None else {}
    core = Scheduler.rebuilt([dependency], Snapshot(admissions=earlier), 100.0, random.Random(1))
    if last_admitted is not None:  # the static limits' calls still fill the dependency's window
        _throttle_one(core, admitted_at=100.2, now=100.3)
        assert core.adaptive_views()["api"].rate == 10.0
        _throttle_one(core, admitted_at=101.2, now=101.3)
    else:
        _throttle_one(core, admitted_at=100.2, now=100.3)
    assert core.adaptive_views()["api"].rate == 5.0  # its own calls' throttle: halved
