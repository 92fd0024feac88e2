"""What a rate limit means at the workers: at most COUNT calls start in any window of T.

The core counts admissions over a span (`RateLimit.admission_window`): T + admission_ttl
for a limit that counts starts (the default), T for one that counts admissions. Here the
real scheduler admits over random schedules, workers start each admission after a random
delay in [0, admission_ttl) (the protocol: never at or after `expires_at`), and the starts
are counted in every window of T. The worst case over *all* delays is checked as well:
starts in some [t, t + T) can be any admissions in (t - ttl, t + T), so the worst is the
most admissions in a half-open window of T + ttl.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from janus.audit import max_in_window
from janus.core.policy import DependencyPolicy, FairnessPolicy, RateCounting, RateLimit
from janus.core.rate import SlidingWindow
from janus.core.scheduler import Scheduler

WINDOWS = [0.1, 0.3, 1.0, 2.5]
TTLS = [0.01, 0.1, 0.25, 1.0, 3.0]  # shorter and longer than the windows

# Start delays as a share of the TTL: the extremes, where a bound breaks first, and anything between.
delays = st.lists(st.sampled_from([0.0, 0.5, 0.999999]) | st.floats(0.0, 1.0, exclude_max=True), min_size=1)
schedules = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.001, 0.05, 0.1, 0.3, 1.0]) | st.floats(0.0, 2.0),  # clock advance
        st.integers(0, 6),  # jobs submitted now
    ),
    min_size=1,
    max_size=40,
)


def start_of(admitted_at: float, expires_at: float, share: float) -> float:
    """A start `share` of the way through the admission's life: always before `expires_at`."""
    start = admitted_at + share * (expires_at - admitted_at)
    return start if start < expires_at else math.nextafter(expires_at, -math.inf)


def run(
    policy: DependencyPolicy, schedule: list[tuple[float, int]], seed: int
) -> list[tuple[str, float, float]]:
    """Admissions (scope, admitted_at, expires_at) of the real core over the schedule, three scopes."""
    core = Scheduler([policy], random.Random(seed))
    now, serial, admissions = 1000.0, 0, []
    for advance, jobs in schedule:
        now += advance
        for _ in range(jobs):
            serial += 1
            core.submit(job_id=f"j{serial}", dependency="api", scope=f"s{serial % 3}", payload=None, now=now)
        for admission in core.admit(now).admissions:
            admissions.append((admission.scope, admission.admitted_at, admission.expires_at))
            # The job is done at once: only the rate limits hold admissions back.
            core.on_result(
                job_id=admission.job_id,
                attempt=admission.attempt,
                success=True,
                error=None,
                retry_after=None,
                now=now,
            )
    return admissions


@settings(max_examples=300, deadline=None)
@given(
    count=st.integers(1, 6),
    window=st.sampled_from(WINDOWS),
    ttl=st.sampled_from(TTLS),
    scope_count=st.integers(1, 4),
    schedule=schedules,
    shares=delays,
    seed=st.integers(0, 2**16),
)
def test_starts_in_every_window_stay_within_the_limit(
    count: int,
    window: float,
    ttl: float,
    scope_count: int,
    schedule: list[tuple[float, int]],
    shares: list[float],
    seed: int,
) -> None:
    limit = RateLimit(count=count, window=window)
    scope_limit = RateLimit(count=scope_count, window=window * 2)
    policy = DependencyPolicy(
        name="api",
        rate_limits=(limit,),
        admission_ttl=ttl,
        lease_timeout=ttl + 10.0,
        fairness=FairnessPolicy(scope_rate_limits=(scope_limit,)),
    )
    admissions = run(policy, schedule, seed)
    starts = [start_of(a, e, shares[i % len(shares)]) for i, (_, a, e) in enumerate(admissions)]
    assert max_in_window(starts, window) <= count
    # Whatever the delays: the densest window of T + ttl is the worst any workers can make.
    assert max_in_window([a for _, a, _ in admissions], window + ttl) <= count
    by_scope: dict[str, list[float]] = defaultdict(list)
    for (scope, _, _), start in zip(admissions, starts, strict=True):
        by_scope[scope].append(start)
    for scope_starts in by_scope.values():
        assert max_in_window(scope_starts, scope_limit.window) <= scope_count


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(1, 6),
    window=st.sampled_from(WINDOWS),
    ttl=st.sampled_from([t for t in TTLS if t < min(WINDOWS)]),
    schedule=schedules,
    shares=delays,
)
def test_counting_admissions_keeps_the_older_meaning(
    count: int, window: float, ttl: float, schedule: list[tuple[float, int]], shares: list[float]
) -> None:
    """`counts = "admissions"`: COUNT admissions per T, so COUNT starts per T - ttl, no more."""
    limit = RateLimit(count=count, window=window, counts=RateCounting.ADMISSIONS)
    policy = DependencyPolicy(name="api", rate_limits=(limit,), admission_ttl=ttl, lease_timeout=ttl + 10.0)
    admissions = run(policy, schedule, 0)
    admitted = [a for _, a, _ in admissions]
    starts = [start_of(a, e, shares[i % len(shares)]) for i, (_, a, e) in enumerate(admissions)]
    assert max_in_window(admitted, window) <= count
    assert max_in_window(starts, window - ttl) <= count


def test_counting_admissions_lets_more_than_count_start_in_a_window() -> None:
    """Why starts are the default: at the limit, admissions counted over T alone let protocol-following
    workers start more than COUNT calls in one window of T."""
    schedule = [(0.0, 4), (1.0, 0)]  # four jobs; the limit 2/1s admits two now, two at 1 s
    for counts, worst in ((RateCounting.ADMISSIONS, 4), (RateCounting.STARTS, 2)):
        limit = RateLimit(count=2, window=1.0, counts=counts)
        policy = DependencyPolicy(name="api", rate_limits=(limit,), admission_ttl=0.5, lease_timeout=10.0)
        admissions = run(policy, schedule, 0)
        # The first two start as late as the protocol allows, the others at once.
        starts = [start_of(a, e, 0.999999 if i < 2 else 0.0) for i, (_, a, e) in enumerate(admissions)]
        assert max_in_window(starts, 1.0) == worst, counts


@settings(max_examples=300, deadline=None)
@given(
    count=st.integers(1, 8),
    window=st.sampled_from(WINDOWS),
    ttl=st.sampled_from(TTLS),
    shortfall=st.sampled_from([1e-9, 1e-3, 0.5, 0.999]),
)
def test_no_shorter_span_suffices(count: int, window: float, ttl: float, shortfall: float) -> None:
    """The necessity half of the proof: a span shorter than T + ttl by any amount lets COUNT + 1
    protocol-following starts into one window of T."""
    limit = RateLimit(count=count, window=window)
    span = window + ttl - shortfall * ttl
    sliding = SlidingWindow(limit, span)
    admitted = [0.0] * sliding.room(0.0)
    sliding.record_many(0.0, len(admitted))
    later = sliding.free_at(0.0)
    assert later == span
    assert sliding.room(later) >= 1
    admitted.append(later)
    # Start every admission at t, or at once if it is later than t: t is within ttl of 0.
    t = max(0.0, later - window) + shortfall * ttl / 2
    assert t < ttl
    starts = [max(a, t) for a in admitted]
    assert all(a <= s < a + ttl for a, s in zip(admitted, starts, strict=True))
    assert max_in_window(starts, window) == count + 1


def test_a_policy_change_keeps_every_admission_of_one_instant() -> None:
    """Several admissions at one instant are several stamps: a new set of limits keeps them all."""
    limit = RateLimit(count=3, window=10.0)
    policy = DependencyPolicy(name="api", rate_limits=(limit,), admission_ttl=1.0, lease_timeout=100.0)
    core = Scheduler([policy], random.Random(0))
    for n in range(6):
        core.submit(job_id=f"j{n}", dependency="api", scope="s", payload=None, now=0.0)
    assert len(core.admit(0.0).admissions) == 3
    wider = DependencyPolicy(
        name="api",
        rate_limits=(limit, RateLimit(count=100, window=20.0)),
        admission_ttl=2.0,
        lease_timeout=100.0,
    )
    core.update_policy(wider)
    assert core.admit(1.0).admissions == []
    decision = core.admit(12.0)  # 0 + 10 s + the new TTL of 2 s
    assert len(decision.admissions) == 3
