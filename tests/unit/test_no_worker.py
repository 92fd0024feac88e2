"""A dependency whose ready queue nobody consumes admits nothing; what people see separates a job's
tries from its admissions; and the per-dependency summary agrees with `why` about scope caps."""

from __future__ import annotations

import json
import random

from janus.core.jobs import Admission, Job, JobState
from janus.core.policy import DependencyPolicy, FairnessPolicy, RateLimit, RetryPolicy
from janus.core.scheduler import Scheduler, WaitReason
from janus.protocol import decode_ready, encode_ready

QUEUE = "janus.ready.api"


def scheduler(**policy: object) -> Scheduler:
    defaults: dict[str, object] = {"name": "api", "lease_timeout": 1000.0, "admission_ttl": 1.0}
    other = DependencyPolicy(name="other", lease_timeout=1000.0, admission_ttl=1.0)
    return Scheduler(
        [DependencyPolicy(**{**defaults, **policy}), other],  # type: ignore[arg-type]
        random.Random(0),
    )


def submit(
    s: Scheduler, *ids: str, dependency: str = "api", scope: str = "default", now: float = 0.0
) -> None:
    for job_id in ids:
        s.submit(job_id=job_id, dependency=dependency, scope=scope, payload=None, now=now)


def test_a_core_never_told_about_workers_admits_as_before() -> None:
    s = scheduler()
    submit(s, "a")
    assert [a.job_id for a in s.admit(0.0).admissions] == ["a"]


def test_no_worker_admits_nothing_and_spends_no_rate() -> None:
    s = scheduler(rate_limits=(RateLimit(count=2, window=10.0),))
    assert s.observe_workers("api", 0, QUEUE) is True
    submit(s, "a", "b", "c")
    submit(s, "x", dependency="other")
    for now in (0.0, 1.0, 5.0, 60.0):  # however long: nothing expires unseen, nothing is re-admitted
        decision = s.admit(now)
        assert [a.job_id for a in decision.admissions] == (["x"] if now == 0.0 else [])
        (blocked,) = decision.blocked
        assert (blocked.dependency, blocked.reason, blocked.limit) == (
            "api",
            WaitReason.NO_WORKER,
            "no worker is consuming janus.ready.api",
        )
        assert blocked.until is None  # only a worker lifts it, not time
    why = s.why("a", 60.0)
    assert why is not None
    assert why[0].reason is WaitReason.NO_WORKER
    assert s.lane_blocks("api", 60.0)[0].detail == "no worker is consuming janus.ready.api"
    # A worker comes: the rate limit is untouched (2 in its window), and each job's first try.
    assert s.observe_workers("api", 1, QUEUE) is True
    admissions = s.admit(61.0).admissions
    assert [(a.job_id, a.attempt, a.failures) for a in admissions] == [("a", 1, 0), ("b", 1, 0)]


def test_only_a_change_between_none_and_some_is_reported() -> None:
    s = scheduler()
    assert s.observe_workers("api", 2, QUEUE) is False  # first seen with workers: nothing changed
    assert s.observe_workers("api", 3, QUEUE) is False
    assert s.observe_workers("api", 0, QUEUE) is True
    assert s.observe_workers("api", 0, QUEUE) is False
    assert s.observe_workers("api", 1, QUEUE) is True


def test_the_ready_message_says_which_try_it_is_apart_from_the_admission() -> None:
    s = scheduler(retry=RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=1.0, jitter=0.0))
    submit(s, "a")
    (first,) = s.admit(0.0).admissions
    s.on_returned(job_id="a", attempt=1, now=0.5)  # nobody took it: costs no try
    (second,) = s.admit(0.5).admissions
    s.on_result(job_id="a", attempt=2, success=False, error="503", retry_after=None, now=1.0)
    (third,) = s.admit(2.0).admissions
    ready = [decode_ready(encode_ready(a)) for a in (first, second, third)]
    assert [(r.attempt, r.try_number, r.max_attempts) for r in ready] == [(1, 1, 5), (2, 1, 5), (3, 2, 5)]


def test_a_ready_message_of_an_older_janus_still_decodes() -> None:
    body = json.loads(encode_ready(Admission.of(admitted(), max_attempts=5)))
    del body["try_number"], body["max_attempts"]
    ready = decode_ready(json.dumps(body).encode())
    assert (ready.try_number, ready.max_attempts) == (None, None)


def admitted() -> Job:
    return Job(
        job_id="a",
        dependency="api",
        scope="default",
        payload=None,
        state=JobState.ADMITTED,
        attempt=3,
        failures=1,
        admitted_at=1.0,
        expires_at=2.0,
        lease_deadline=10.0,
    )


def test_scopes_held_by_their_own_cap_are_counted_and_named() -> None:
    """`janus scopes` and janus_active_scopes used to say "not blocked" and 0 here; `why` did not."""
    s = scheduler(concurrency=10, fairness=FairnessPolicy(scope_concurrency=1))
    for scope in ("t1", "t2"):
        submit(s, f"{scope}-a", f"{scope}-b", scope=scope)
    assert len(s.admit(0.0).admissions) == 2  # one per scope, then each scope is at its cap
    s.admit(0.0)
    (lane,) = [stats for stats in s.stats() if stats.dependency == "api"]
    assert lane.scopes == 2, "both scopes still have a job eligible"
    (block,) = s.lane_blocks("api", 0.0)
    assert (block.reason, block.detail) == (WaitReason.SCOPE_CONCURRENCY, "2 scopes at scope concurrency 1")
    why = s.why("t1-b", 0.0)
    assert why is not None
    assert why[0].reason is WaitReason.SCOPE_CONCURRENCY
    s.on_result(job_id="t1-a", attempt=1, success=True, error=None, retry_after=None, now=1.0)
    (block,) = s.lane_blocks("api", 1.0)
    assert block.detail == "1 scope at scope concurrency 1"
