"""The limiter state the metrics, `janus status` and the status page show, as the core tells it:
each limit's use, what decides the next admission, and the waiting jobs by reason."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from janus.core.policy import DependencyPolicy, FairnessPolicy, RateCounting, RateLimit, RetryPolicy
from janus.core.scheduler import Scheduler, WaitReason


def scheduler(**policy: object) -> Scheduler:
    defaults: dict[str, object] = {"name": "api", "lease_timeout": 1000.0, "admission_ttl": 1.0}
    return Scheduler([DependencyPolicy(**{**defaults, **policy})], random.Random(0))  # type: ignore[arg-type]


def submit(s: Scheduler, count: int, *, scope: str = "a", now: float = 0.0, prefix: str = "") -> None:
    for i in range(count):
        s.submit(job_id=f"{prefix}{scope}-{i}", dependency="api", scope=scope, payload=None, now=now)


def test_rate_use_counts_the_window_and_names_the_deciding_limit() -> None:
    s = scheduler(
        rate_limits=(RateLimit(count=3, window=10.0, counts=RateCounting.ADMISSIONS),), concurrency=10
    )
    submit(s, 5)
    assert len(s.admit(0.0).admissions) == 3
    (lane,) = s.limits(1.0)
    assert [(r.limit, r.count, r.used) for r in lane.rates] == [("3/10s", 3, 3)]
    assert (lane.concurrency, lane.held) == (10, 3)
    assert lane.blocked is not None
    assert (lane.blocked.reason, lane.blocked.limit, lane.blocked.until) == (
        WaitReason.RATE,
        "rate 3/10s",
        10.0,
    )
    # Once the window has passed, nothing counts and nothing blocks.
    (lane,) = s.limits(10.0)
    assert [r.used for r in lane.rates] == [0]
    assert lane.blocked is None


def test_limits_advance_the_core_clock() -> None:
    """A window pruned at a time the admission has not reached yet would forget admissions."""
    s = scheduler(rate_limits=(RateLimit(count=1, window=10.0, counts=RateCounting.ADMISSIONS),))
    submit(s, 2)
    s.admit(0.0)
    s.limits(10.5)
    assert s.clock == 10.5
    assert len(s.admit(5.0).admissions) == 1  # decided at 10.5, the clock's floor, not at 5.0


def test_waiting_by_reason_table() -> None:
    rows = [
        # (policy, jobs per scope, expected reasons): each a different first reason.
        ({"concurrency": 2}, {"a": 4}, {WaitReason.CONCURRENCY: 2}),  # 2 held, 2 wait for a slot
        (
            {"rate_limits": (RateLimit(count=1, window=60.0, counts=RateCounting.ADMISSIONS),)},
            {"a": 3},
            {WaitReason.RATE: 2},
        ),
        # b's cap of 1 parks b once it holds one: its other job waits for its own cap.
        (
            {"fairness": FairnessPolicy(scope_concurrency=1), "concurrency": 5},
            {"a": 1, "b": 2},
            {WaitReason.SCOPE_CONCURRENCY: 1},
        ),
    ]
    for policy, jobs, expected in rows:
        s = scheduler(**policy)
        for scope, count in jobs.items():
            submit(s, count, scope=scope)
        s.admit(0.0)
        counts = s.waiting_by_reason("api", 0.0)
        assert {r: n for r, n in counts.items() if n} == expected, policy


def test_retries_wait_for_their_backoff_and_no_worker_decides_the_rest() -> None:
    retry = RetryPolicy(max_attempts=5, base_delay=10.0, max_delay=10.0, jitter=0.0)
    s = scheduler(retry=retry)
    submit(s, 2)
    (first, _) = s.admit(0.0).admissions
    s.on_result(
        job_id=first.job_id, attempt=first.attempt, success=False, error="boom", retry_after=None, now=1.0
    )
    s.observe_workers("api", 0, "janus.ready.api")
    submit(s, 1, scope="b", now=1.0)
    counts = s.waiting_by_reason("api", 1.0)
    assert {r: n for r, n in counts.items() if n} == {WaitReason.BACKOFF: 1, WaitReason.NO_WORKER: 1}


@settings(max_examples=60, deadline=None)
@given(
    jobs=st.dictionaries(st.sampled_from("abcdef"), st.integers(1, 8), min_size=1),
    concurrency=st.integers(1, 6),
    scope_cap=st.none() | st.integers(1, 3),
    admit_at=st.lists(st.floats(0.0, 30.0), max_size=4),
)
def test_waiting_by_reason_adds_up_to_the_waiting_jobs(
    jobs: dict[str, int], concurrency: int, scope_cap: int | None, admit_at: list[float]
) -> None:
    s = scheduler(
        concurrency=concurrency,
        rate_limits=(RateLimit(count=4, window=10.0),),
        fairness=FairnessPolicy(scope_concurrency=scope_cap),
    )
    for scope, count in jobs.items():
        submit(s, count, scope=scope)
    for now in sorted(admit_at):
        s.admit(now)
    (stats,) = s.stats()
    counts = s.waiting_by_reason("api", s.clock)
    assert sum(counts.values()) == stats.ready + stats.stored + stats.delayed


def test_the_observer_shows_one_blocked_series_per_dependency_and_drops_it_when_it_lifts() -> None:
    from janus.api.metrics import Metrics
    from janus.service.observe import Observer

    metrics = Metrics()
    observer = Observer(metrics)
    s = scheduler(
        rate_limits=(RateLimit(count=1, window=10.0, counts=RateCounting.ADMISSIONS),), concurrency=3
    )
    submit(s, 2)
    s.admit(0.0)
    observer.scopes(s, 1.0)
    value = metrics.registry.get_sample_value
    assert value("janus_rate_limit_count", {"dependency": "api", "limit": "1/10s"}) == 1
    assert value("janus_rate_window_admissions", {"dependency": "api", "limit": "1/10s"}) == 1
    assert value("janus_concurrency_limit", {"dependency": "api"}) == 3
    assert value("janus_next_admission_timestamp_seconds", {"dependency": "api"}) == 10.0
    blocked = {"dependency": "api", "reason": "rate", "limit": "rate 1/10s"}
    assert value("janus_dependency_blocked", blocked) == 1
    assert value("janus_waiting_jobs_by_reason", {"dependency": "api", "reason": "rate"}) == 1
    assert value("janus_waiting_jobs_by_reason", {"dependency": "api", "reason": "backoff"}) == 0
    observer.scopes(s, 10.0)
    assert value("janus_dependency_blocked", blocked) is None
    assert value("janus_next_admission_timestamp_seconds", {"dependency": "api"}) == 0
    assert value("janus_rate_window_admissions", {"dependency": "api", "limit": "1/10s"}) == 0


def test_a_new_term_shows_no_series_a_previous_term_left() -> None:
    from janus.api.metrics import Metrics
    from janus.service.observe import Observer

    metrics = Metrics()
    s = scheduler(rate_limits=(RateLimit(count=1, window=10.0, counts=RateCounting.ADMISSIONS),))
    submit(s, 2)
    s.admit(0.0)
    Observer(metrics).scopes(s, 1.0)
    value = metrics.registry.get_sample_value
    blocked = {"dependency": "api", "reason": "rate", "limit": "rate 1/10s"}
    assert value("janus_dependency_blocked", blocked) == 1
    assert value("janus_scope_waiting_jobs", {"dependency": "api", "scope": "a"}) == 1
    Observer(metrics).scopes(scheduler(), 1.0)  # the next term: nothing waits, nothing blocks
    assert value("janus_dependency_blocked", blocked) is None
    assert value("janus_scope_waiting_jobs", {"dependency": "api", "scope": "a"}) is None
