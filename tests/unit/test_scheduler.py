"""The admission core, case by case: what it admits, why the rest waits, how it restores."""

from __future__ import annotations

import random

import pytest

from janus.core.decisions import Changes, Verdict, WaitReason
from janus.core.jobs import Admission, Job, JobState
from janus.core.policy import DependencyPolicy, RateCounting, RateLimit, RetryPolicy
from janus.core.rebuild import Snapshot
from janus.core.scheduler import Scheduler


def scheduler(**policy: object) -> Scheduler:
    defaults: dict[str, object] = {"name": "api", "lease_timeout": 1000.0, "admission_ttl": 1.0}
    return Scheduler([DependencyPolicy(**{**defaults, **policy})], random.Random(0))  # type: ignore[arg-type]


def submit(s: Scheduler, *ids: str, scope: str = "default", now: float = 0.0) -> None:
    for job_id in ids:
        s.submit(job_id=job_id, dependency="api", scope=scope, payload=None, now=now)


def test_admission_values_carry_the_deadlines() -> None:
    s = scheduler(admission_ttl=2.0, lease_timeout=30.0)
    submit(s, "a")
    (admission,) = s.admit(100.0).admissions
    assert (admission.attempt, admission.admitted_at, admission.expires_at, admission.lease_deadline) == (
        1,
        100.0,
        102.0,
        130.0,
    )
    changes = s.drain_changes()
    assert changes.updated == []
    (new,) = changes.new
    assert new.state is JobState.ADMITTED, "a new job is written once, in its latest state"
    assert s.drain_changes() == Changes(new=[], updated=[]), "drained once"
    s.on_result(job_id="a", attempt=1, success=True, error=None, retry_after=None, now=101.0)
    (done,) = s.drain_changes().updated
    assert done.state is JobState.SUCCEEDED


@pytest.mark.parametrize(
    ("policy", "jobs", "admitted", "reason", "limit", "until"),
    [
        # concurrency binds: no time frees it, only a released slot
        ({"concurrency": 2}, 5, 2, WaitReason.CONCURRENCY, "concurrency 2", None),
        # a rate limit binds: it frees when the oldest admission leaves its span, the window
        # plus the admission TTL (1 s): a worker may start it until then
        ({"rate_limits": (RateLimit(count=3, window=10.0),)}, 5, 3, WaitReason.RATE, "rate 3/10s", 11.0),
        # ...or the window alone, for a limit that counts admissions
        (
            {"rate_limits": (RateLimit(count=3, window=10.0, counts=RateCounting.ADMISSIONS),)},
            5,
            3,
            WaitReason.RATE,
            "rate 3/10s",
            10.0,
        ),
        # the tighter of two limits is the one named
        (
            {"rate_limits": (RateLimit(count=5, window=1.0), RateLimit(count=2, window=60.0))},
            5,
            2,
            WaitReason.RATE,
            "rate 2/60s",
            61.0,
        ),
        # concurrency is checked before rate when both bind
        (
            {"concurrency": 1, "rate_limits": (RateLimit(count=1, window=5.0),)},
            2,
            1,
            WaitReason.CONCURRENCY,
            "concurrency 1",
            None,
        ),
    ],
)
def test_why_the_rest_waits(
    policy: dict[str, object], jobs: int, admitted: int, reason: WaitReason, limit: str, until: float | None
) -> None:
    s = scheduler(**policy)
    submit(s, *[f"j{i}" for i in range(jobs)])
    decision = s.admit(0.0)
    assert len(decision.admissions) == admitted
    (blocked,) = decision.blocked
    assert (blocked.reason, blocked.limit, blocked.until, blocked.waiting) == (
        reason,
        limit,
        until,
        jobs - admitted,
    )
    if until is not None:
        assert decision.next_wakeup == until
        assert s.admit(until - 1e-6).admissions == []
        assert len(s.admit(until).admissions) >= 1


def test_limit_cuts_a_tick_short_and_asks_to_be_called_again() -> None:
    s = scheduler()
    submit(s, *[f"j{i}" for i in range(5)])
    decision = s.admit(1.0, limit=2)
    assert len(decision.admissions) == 2
    assert decision.next_wakeup == 1.0
    assert len(s.admit(1.0).admissions) == 3


def test_scopes_take_turns_and_keep_their_own_order() -> None:
    s = scheduler(concurrency=10)
    submit(s, "big-1", "big-2", "big-3", "big-4", scope="big")
    submit(s, "small-1", "small-2", scope="small")
    order = [a.job_id for a in s.admit(0.0).admissions]
    assert order == ["big-1", "small-1", "big-2", "small-2", "big-3", "big-4"]


def test_a_returned_admission_frees_its_slot_and_costs_no_attempt() -> None:
    s = scheduler(concurrency=1)
    submit(s, "a", "b")
    (first,) = s.admit(0.0).admissions
    transition = s.on_returned(job_id="a", attempt=first.attempt, now=1.0)
    assert transition.verdict is Verdict.RELEASED
    assert transition.job is not None
    assert (transition.job.failures, transition.job.state) == (0, JobState.WAITING)
    # "b" waited longer; "a" went to the back of its scope when it came back.
    assert [a.job_id for a in s.admit(1.0).admissions] == ["b"]
    s.on_result(job_id="b", attempt=1, success=True, error=None, retry_after=None, now=2.0)
    (again,) = s.admit(2.0).admissions
    assert (again.job_id, again.attempt) == ("a", 2)


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        (2, Verdict.STALE_ATTEMPT),  # a future attempt
        (0, Verdict.STALE_ATTEMPT),  # a past one
    ],
)
def test_results_for_other_attempts_change_nothing(attempt: int, expected: Verdict) -> None:
    s = scheduler(concurrency=1)
    submit(s, "a")
    s.admit(0.0)
    s.drain_changes()
    assert (
        s.on_result(job_id="a", attempt=attempt, success=True, error=None, retry_after=None, now=1.0).verdict
        is expected
    )
    assert (
        s.on_result(job_id="zz", attempt=1, success=True, error=None, retry_after=None, now=1.0).verdict
        is Verdict.UNKNOWN_JOB
    )
    assert s.drain_changes() == Changes(new=[], updated=[])
    assert s.stats()[0].held == 1


def test_a_second_result_for_the_same_attempt_is_stale() -> None:
    s = scheduler()
    submit(s, "a")
    s.admit(0.0)
    assert (
        s.on_result(job_id="a", attempt=1, success=False, error="x", retry_after=None, now=1.0).verdict
        is Verdict.RETRY_SCHEDULED
    )
    assert (
        s.on_result(job_id="a", attempt=1, success=True, error=None, retry_after=None, now=1.0).verdict
        is Verdict.STALE_ATTEMPT
    )


def test_retry_after_sets_the_floor_of_the_next_attempt_within_max_retry_after() -> None:
    s = scheduler(retry=RetryPolicy(base_delay=0.1, max_delay=5.0, jitter=0.0, max_retry_after=60.0))
    submit(s, "a", "b")
    s.admit(0.0)
    a = s.on_result(job_id="a", attempt=1, success=False, error="429", retry_after=3.0, now=1.0).job
    b = s.on_result(job_id="b", attempt=1, success=False, error="429", retry_after=3600.0, now=1.0).job
    assert a is not None
    assert b is not None
    assert a.eligible_at == 4.0
    assert b.eligible_at == 61.0, "a buggy retry_after is clamped at max_retry_after (not at max_delay)"


def test_retry_after_with_a_success_pauses_the_dependency_and_finishes_the_job() -> None:
    s = scheduler(retry=RetryPolicy(max_retry_after=60.0))
    submit(s, "a", "b")
    s.admit(0.0)
    done = s.on_result(job_id="a", attempt=1, success=True, error=None, retry_after=3.0, now=1.0)
    assert done.verdict is Verdict.SUCCEEDED
    s.on_result(job_id="b", attempt=1, success=True, error=None, retry_after=None, now=1.0)
    submit(s, "c", now=1.0)
    decision = s.admit(2.0)
    assert decision.admissions == []
    (blocked,) = decision.blocked
    assert (blocked.reason, blocked.until) == (WaitReason.PAUSED, 4.0)
    assert [a.job_id for a in s.admit(4.0).admissions] == ["c"]


def test_lease_timeout_is_a_failed_attempt() -> None:
    s = scheduler(lease_timeout=5.0, retry=RetryPolicy(max_attempts=2, base_delay=1.0, jitter=0.0))
    submit(s, "a")
    s.admit(0.0)
    assert s.expire_leases(4.99) == []
    (timeout,) = s.expire_leases(5.0)
    assert timeout.verdict is Verdict.RETRY_SCHEDULED
    assert timeout.job is not None
    assert (timeout.job.failures, timeout.job.eligible_at) == (1, 6.0)
    assert timeout.job.last_error == "lease timed out after 5s"
    (second,) = s.admit(6.0).admissions
    (dead,) = s.expire_leases(second.lease_deadline)
    assert dead.verdict is Verdict.DEAD


@pytest.mark.parametrize("released", [False, True], ids=["in backoff", "eligible, waiting for a slot"])
def test_a_late_success_after_the_lease_ran_out_completes_the_job(released: bool) -> None:
    """Decided in docs/protocol.md: the work was done, so running it again would only repeat it."""
    s = scheduler(concurrency=1, lease_timeout=5.0, retry=RetryPolicy(base_delay=10.0, jitter=0.0))
    submit(s, "a", "b")
    s.admit(0.0)  # "a" holds the only slot
    (lapsed,) = s.expire_leases(5.0)
    assert lapsed.verdict is Verdict.RETRY_SCHEDULED
    (b,) = s.admit(5.0).admissions  # the slot went to "b"
    assert b.job_id == "b"
    if released:
        assert s.admit(15.0).admissions == []  # "a" is eligible again but "b" holds the slot
    s.drain_changes()
    late = s.on_result(job_id="a", attempt=1, success=True, error=None, retry_after=None, now=16.0)
    assert late.verdict is Verdict.SUCCEEDED
    assert late.job is not None
    assert late.job.state is JobState.SUCCEEDED
    assert late.job.failures == 1
    assert s.drain_changes().updated == [late.job]
    assert s.stats()[0].held == 1, "frees no slot: the lease's expiry already did"
    assert (s.stats()[0].ready, s.stats()[0].delayed) == (0, 0), "the retry is cancelled"
    s.on_result(job_id="b", attempt=1, success=True, error=None, retry_after=None, now=17.0)
    assert s.admit(100.0).admissions == [], "never admitted again"
    again = s.on_result(job_id="a", attempt=1, success=True, error=None, retry_after=None, now=18.0)
    assert again.verdict is Verdict.UNKNOWN_JOB


def test_a_late_result_is_stale_once_the_job_was_admitted_again_or_failed_otherwise() -> None:
    s = scheduler(lease_timeout=5.0, retry=RetryPolicy(base_delay=1.0, jitter=0.0))
    submit(s, "a", "b")
    s.admit(0.0)
    s.expire_leases(5.0)
    s.admit(6.0)  # both admitted again, attempt 2
    stale = s.on_result(job_id="a", attempt=1, success=True, error=None, retry_after=None, now=7.0)
    assert stale.verdict is Verdict.STALE_ATTEMPT
    # A failure the worker reported is final for its attempt: a success for it afterwards is stale.
    s.on_result(job_id="b", attempt=2, success=False, error="x", retry_after=None, now=7.0)
    forged = s.on_result(job_id="b", attempt=2, success=True, error=None, retry_after=None, now=7.5)
    assert forged.verdict is Verdict.STALE_ATTEMPT
    # A late failure for a lapsed attempt changes nothing either.
    s.expire_leases(11.0)  # "a" attempt 2 lapses
    assert (
        s.on_result(job_id="a", attempt=2, success=False, error="x", retry_after=None, now=12.0).verdict
        is Verdict.STALE_ATTEMPT
    )


def test_restore_rebuilds_held_slots_backoffs_and_rate_windows() -> None:
    s = scheduler(concurrency=2, rate_limits=(RateLimit(count=3, window=10.0),))
    held = Job(
        job_id="h",
        dependency="api",
        scope="x",
        payload=None,
        state=JobState.ADMITTED,
        attempt=1,
        admitted_at=95.0,
        expires_at=96.0,
        lease_deadline=105.0,
    )
    backing_off = Job(
        job_id="b", dependency="api", scope="x", payload=None, attempt=1, failures=1, eligible_at=120.0
    )
    ready = Job(job_id="r", dependency="api", scope="x", payload=None, eligible_at=90.0)
    ready2 = Job(job_id="r2", dependency="api", scope="y", payload=None, eligible_at=91.0)
    orphan = Job(job_id="o", dependency="gone", scope="x", payload=None)
    snapshot = Snapshot(
        jobs=[held, backing_off, ready, ready2, orphan],
        admissions={"api": [("x", 93.0), ("y", 95.0)], "gone": [("x", 99.0)]},
        max_seq=0,
    )
    s = Scheduler.rebuilt(s.policies.values(), snapshot, 96.0, random.Random(1))
    assert [s.job(job.job_id) is not None for job in snapshot.jobs] == [True, True, True, True, False]
    assert snapshot.unconfigured(s.policies) == 1
    decision = s.admit(100.0)
    # One slot is held and two admissions are in the window: one more of each is left.
    assert [a.job_id for a in decision.admissions] == ["r"]
    assert decision.blocked[0].reason is WaitReason.CONCURRENCY
    s.on_result(job_id="h", attempt=1, success=True, error=None, retry_after=None, now=101.0)
    decision = s.admit(101.0)
    assert decision.admissions == []
    assert decision.blocked[0].limit == "rate 3/10s"
    assert decision.blocked[0].until == 104.0  # 93 + the 10 s window + the 1 s admission TTL


def test_a_backward_clock_jump_cannot_reopen_a_window() -> None:
    s = scheduler(rate_limits=(RateLimit(count=1, window=10.0),))
    submit(s, "a", "b")
    assert len(s.admit(100.0).admissions) == 1
    # The host clock jumps back an hour: decisions keep using the latest time seen.
    decision = s.admit(100.0 - 3600.0)
    assert decision.admissions == []
    assert decision.blocked[0].until == 111.0  # the window and the admission TTL after 100
    (second,) = s.admit(111.0).admissions
    assert second.admitted_at == 111.0


def test_a_repeat_the_store_already_had_is_retracted_without_a_trace() -> None:
    s = scheduler(concurrency=1, rate_limits=(RateLimit(count=5, window=10.0),))
    submit(s, "old", "fresh", scope="a")
    submit(s, "waiting-repeat", scope="b")
    decision = s.admit(0.0)
    assert [a.job_id for a in decision.admissions] == ["old"]
    s.drain_changes()
    # The store says "old" and "waiting-repeat" were finished jobs: both are undone.
    s.retract("old")
    s.retract("waiting-repeat")
    assert s.job("old") is None
    assert s.job("waiting-repeat") is None
    (stats,) = s.stats()
    assert (stats.held, stats.ready) == (0, 1), "the slot is free again; only 'fresh' waits"
    assert [a.job_id for a in s.admit(1.0).admissions] == ["fresh"]
    # The retracted admission's lease is forgotten: only "fresh" times out.
    assert [t.job.job_id for t in s.expire_leases(5000.0) if t.job] == ["fresh"]


def test_only_jobs_of_the_last_drain_can_be_retracted() -> None:
    s = scheduler()
    submit(s, "a")
    with pytest.raises(ValueError, match="not submitted"):
        s.retract("a")  # not drained (written) yet
    s.drain_changes()
    s.drain_changes()
    with pytest.raises(ValueError, match="not submitted"):
        s.retract("a")  # written two rounds ago: the store has long accepted it


def test_an_admission_is_only_made_of_an_admitted_job() -> None:
    with pytest.raises(ValueError, match="not admitted"):
        Admission.of(Job(job_id="a", dependency="api", scope="s", payload=None))


def test_transitions_carry_every_field_they_do_not_change() -> None:
    """The hot paths build jobs field by field (positionally, not with _replace): none may be dropped."""
    s = scheduler()
    # A retry, with every field that can be set away from its default.
    waiting = Job(
        job_id="a",
        dependency="api",
        scope="x",
        payload={"k": [1, 2]},
        seq=9,
        attempt=2,
        failures=1,
        eligible_at=5.0,
        last_error="boom",
    )
    assert s.restore(waiting)
    (admission,) = s.admit(6.0).admissions
    admitted = s.job("a")
    assert admitted is not None
    done = s.on_result(job_id="a", attempt=3, success=True, error=None, retry_after=None, now=7.0).job
    assert done is not None
    steps = [
        ("admitted", waiting, admitted, {"state", "attempt", "admitted_at", "expires_at", "lease_deadline"}),
        ("done", admitted, done, {"state", "finished_at", "last_error"}),
    ]
    for name, before, after, changed in steps:
        for field in Job._fields:
            if field not in changed:
                assert getattr(after, field) == getattr(before, field), (name, field)
    assert (admitted.attempt, done.last_error) == (3, None)
    assert admission == Admission.of(admitted, max_attempts=5)  # the policy's default


def test_values_handed_to_the_shell_never_change() -> None:
    """Jobs, admissions and transitions are immutable tuples, and every event makes new ones:
    what the shell holds from an earlier call stays as it was."""
    s = scheduler()
    submitted = s.submit(job_id="a", dependency="api", scope="x", payload={"k": 1}, now=1.0)
    kept = tuple(submitted)
    (admission,) = s.admit(2.0).admissions
    (admitted,) = s.drain_changes().new
    transition = s.on_result(job_id="a", attempt=1, success=True, error=None, retry_after=None, now=3.0)
    assert tuple(submitted) == kept
    assert submitted.state is JobState.WAITING
    assert admitted.state is JobState.ADMITTED
    assert admission == Admission.of(admitted, max_attempts=5)  # the policy's default
    assert transition.job is not None
    assert transition.job.state is JobState.SUCCEEDED
    for value in (submitted, admission, transition):
        with pytest.raises(AttributeError):
            value.job_id = "b"  # type: ignore[misc,union-attr]
