"""Trimming an admission's place in its rate windows once its result tells when the call began.

A limit that counts starts holds each admission's place from the admission until T + admission_ttl
later, because the worker may start it until it expires. A result that carries the call's
`duration` and arrives at r says the call began by r - duration (and before `expires_at`): the
place is then trimmed to end T after that, never before T after the admission (the clamp). Here the
real scheduler admits over random schedules; every admission gets a random result delay and
reported duration, and its call starts anywhere in [admitted, bound], bound = the latest start the
result allows, clamped to the admission. The API counts the calls (and their units) that start in
every window of T on its own: never more than COUNT. A reported duration longer than the time since
the admission (a lying or badly clocked worker) makes the bound the admission itself: without the
clamp, such a call could share a window of T with COUNT others.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from janus.audit import max_in_window
from janus.core.decisions import Admission
from janus.core.policy import DependencyPolicy, FairnessPolicy, RateLimit, ShadowLimits
from janus.core.scheduler import Scheduler

WINDOWS = [0.1, 1.0, 2.5]
TTLS = [0.01, 0.25, 1.0, 3.0]


@dataclass(frozen=True, kw_only=True, slots=True)
class Fate:
    """What happens to one admission: its result arrives `delay` after it, saying the call took
    `duration` (None: an old worker that does not say), and the call began `share` of the way from
    the admission to the latest start that result allows."""

    delay: float
    duration: float | None
    share: float


fates = st.lists(
    st.builds(
        Fate,
        delay=st.sampled_from([0.0, 0.001, 0.1, 0.5]) | st.floats(0.0, 4.0),
        duration=st.none() | st.sampled_from([0.0, 0.05, 2.0]) | st.floats(0.0, 4.0),
        share=st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0),
    ),
    min_size=1,
    max_size=12,
)
schedules = st.lists(
    st.tuples(st.sampled_from([0.0, 0.05, 0.3, 1.0]) | st.floats(0.0, 3.0), st.integers(0, 5)),
    min_size=1,
    max_size=30,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Call:
    scope: str
    admitted_at: float
    start: float
    units: float


def latest_start(admission: Admission, fate: Fate) -> float:
    """The latest start the result allows, clamped to [admitted_at, expires_at)."""
    bound = admission.expires_at
    if fate.duration is not None:
        bound = min(bound, admission.admitted_at + fate.delay - fate.duration)
    bound = max(admission.admitted_at, bound)
    return bound if bound < admission.expires_at else math.nextafter(admission.expires_at, -math.inf)


def run(
    policy: DependencyPolicy,
    schedule: list[tuple[float, int]],
    fated: list[Fate],
    seed: int,
    made: Callable[[Scheduler], None] = lambda _: None,
) -> list[Call]:
    """The real core over the schedule (handed to `made`); each admission's result comes as its
    fate says (in time order, with an admission after each event), and its call starts where the
    fate puts it."""
    core = Scheduler([policy], random.Random(seed))
    made(core)
    rng = random.Random(seed)
    events: list[tuple[float, int, str, object]] = []  # (at, serial, kind, what)
    calls: list[Call] = []
    serial = 0
    now = 1000.0
    for advance, jobs in schedule:
        now += advance
        serial += 1
        heapq.heappush(events, (now, serial, "submit", jobs))

    def admitted(at: float) -> None:
        nonlocal serial
        decision = core.admit(at)
        for admission in decision.admissions:
            fate = fated[len(calls) % len(fated)]
            bound = latest_start(admission, fate)
            units = core_cost[admission.job_id]
            start = admission.admitted_at + fate.share * (bound - admission.admitted_at)
            calls.append(
                Call(scope=admission.scope, admitted_at=admission.admitted_at, start=start, units=units)
            )
            serial += 1
            heapq.heappush(events, (at + fate.delay, serial, "result", (admission, fate, units)))
        if decision.next_wakeup is not None and decision.next_wakeup > at:
            serial += 1
            heapq.heappush(events, (decision.next_wakeup, serial, "wake", None))

    core_cost: dict[str, float] = {}
    submitted = 0
    while events:
        at, _, kind, what = heapq.heappop(events)
        if kind == "submit":
            assert isinstance(what, int)
            for _ in range(what):
                submitted += 1
                job_id = f"j{submitted}"
                core_cost[job_id] = cost = rng.choice([1.0, 2.5, 4.0])
                core.submit(
                    job_id=job_id,
                    dependency="api",
                    scope=f"s{submitted % 3}",
                    payload=None,
                    now=at,
                    cost=cost,
                )
        elif kind == "result":
            admission, fate, units = what  # type: ignore[misc]
            core.on_result(
                job_id=admission.job_id,
                attempt=admission.attempt,
                success=True,
                error=None,
                retry_after=None,
                now=at,
                duration=fate.duration,
                cost=units,
            )
        admitted(at)
    return calls


def max_units_in_window(calls: list[Call], window: float) -> float:
    """The most units of calls that start in any half-open window [t, t + window)."""
    ordered = sorted(calls, key=lambda call: call.start)
    return max(
        (
            sum(c.units for c in ordered[i:] if c.start < first.start + window)
            for i, first in enumerate(ordered)
        ),
        default=0.0,
    )


@settings(max_examples=300, deadline=None)
@given(
    count=st.integers(1, 5),
    units=st.integers(4, 12),
    window=st.sampled_from(WINDOWS),
    ttl=st.sampled_from(TTLS),
    schedule=schedules,
    fated=fates,
    seed=st.integers(0, 2**16),
)
def test_calls_that_start_by_their_bound_stay_within_every_limit(
    count: int,
    units: int,
    window: float,
    ttl: float,
    schedule: list[tuple[float, int]],
    fated: list[Fate],
    seed: int,
) -> None:
    limit = RateLimit(count=count, window=window)
    unit_limit = RateLimit(count=units, window=window, units=True)
    scope_limit = RateLimit(count=max(1, count - 1), window=window)
    policy = DependencyPolicy(
        name="api",
        rate_limits=(limit,),
        unit_limits=(unit_limit,),
        admission_ttl=ttl,
        lease_timeout=ttl + 10.0,
        fairness=FairnessPolicy(scope_rate_limits=(scope_limit,)),
    )
    calls = run(policy, schedule, fated, seed)
    assert max_in_window([c.start for c in calls], window) <= count
    assert max_units_in_window(calls, window) <= units
    for scope in {c.scope for c in calls}:
        assert max_in_window([c.start for c in calls if c.scope == scope], window) <= scope_limit.count
    # The clamp: whatever the durations say, at most COUNT admissions in any window of T.
    assert max_in_window([c.admitted_at for c in calls], window) <= count


def test_a_result_with_its_duration_frees_the_place_early() -> None:
    """One call per second, a quarter-second TTL: without `duration` an admission holds its place
    1.25 s; with the call's duration it holds it T after the call began, and the next one goes then."""
    policy = DependencyPolicy(
        name="api", rate_limits=(RateLimit(count=1, window=1.0),), admission_ttl=0.25, lease_timeout=5.0
    )
    cases = [
        # (duration, when the second admission may go)
        (None, 1000.0 + 1.25),  # an old worker: the whole span, T + TTL
        (0.05, (1000.1 - 0.05) + 1.0),  # began by the result's arrival less the call's duration
        (0.0, 1000.1 + 1.0),  # began by the result's arrival
        (0.2, 1000.0 + 1.0),  # longer than the time since the admission: T after the admission
        (5.0, 1000.0 + 1.0),  # the same, by far
    ]
    for duration, second_at in cases:
        core = Scheduler([policy], random.Random(0))
        for job in ("a", "b"):
            core.submit(job_id=job, dependency="api", scope="s", payload=None, now=1000.0)
        first = core.admit(1000.0).admissions[0]
        core.on_result(
            job_id=first.job_id,
            attempt=first.attempt,
            success=True,
            error=None,
            retry_after=None,
            now=1000.1,
            duration=duration,
        )
        decision = core.admit(1000.1)
        assert decision.admissions == []
        assert decision.next_wakeup == second_at, duration
        assert core.admit(math.nextafter(second_at, 0.0)).admissions == []
        assert [a.job_id for a in core.admit(second_at).admissions] == ["b"]


@settings(max_examples=100, deadline=None)
@given(schedule=schedules, fated=fates, seed=st.integers(0, 2**16))
def test_a_shadow_limit_equal_to_the_real_one_holds_nothing_back(
    schedule: list[tuple[float, int]], fated: list[Fate], seed: int
) -> None:
    """The shadow windows are trimmed with the real ones: a shadow of the very limits in force
    never says it would have held an admission back."""
    limit, scope_limit = RateLimit(count=3, window=1.0), RateLimit(count=2, window=1.0)
    policy = DependencyPolicy(
        name="api",
        rate_limits=(limit,),
        unit_limits=(RateLimit(count=8, window=1.0, units=True),),
        admission_ttl=0.25,
        lease_timeout=10.0,
        fairness=FairnessPolicy(scope_rate_limits=(scope_limit,)),
        shadow=ShadowLimits(rate_limits=(limit,), scope_rate_limits=(scope_limit,)),
    )
    core: list[Scheduler] = []
    calls = run(policy, schedule, fated, seed, made=core.append)
    assert calls or not any(jobs for _, jobs in schedule)
    assert core[0].shadow_totals("api") == {}
