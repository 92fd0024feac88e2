"""The retry budget, the circuit breaker and the Retry-After pause, each alone (pure core).

Tables with a comment per row for the rules; Hypothesis for the invariants over any
sequence of events, checked against independent counts rather than the objects' own.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from janus.core.circuit import CircuitBreaker, CircuitState
from janus.core.decisions import WaitReason
from janus.core.pause import pause_for
from janus.core.policy import RECOVERY_OFF, CircuitPolicy, DependencyPolicy, RecoveryPolicy, RetryPolicy
from janus.core.rebuild import Snapshot
from janus.core.retry_budget import RetryBudget
from janus.core.scheduler import Scheduler

# -- retry budget ---------------------------------------------------------------

BUDGET_RULE = [
    # (budget, min_retries, firsts in window, retries in window, may one more retry go)
    (0.2, 1, 0, 0, True),  # nothing in the window: the minimum allowance lets one through
    (0.2, 1, 0, 1, False),  # ...but only one
    (0.2, 3, 0, 2, True),  # a larger minimum
    (0.2, 3, 0, 3, False),
    (0.2, 1, 4, 0, True),  # 1 of 5 = 20 %: exactly at the budget
    (0.2, 1, 4, 1, False),  # 2 of 6 > 20 %, and above the minimum
    (0.2, 1, 8, 1, True),  # 2 of 10 = 20 %
    (0.2, 1, 8, 2, False),  # 3 of 11, floor(0.2 × 11) = 2
    (0.2, 1, 11, 2, False),  # 3 of 14: floor(2.8) = 2
    (0.2, 1, 12, 2, True),  # 3 of 15: 0.2 × 15 is 3.0000000000000004 in floating point, floored to 3
    (0.5, 1, 10, 10, False),  # 11 of 21 > 50 %
    (0.5, 1, 10, 9, True),  # 10 of 20 = 50 %
    (1.0, 1, 0, 500, True),  # a budget of 1 never holds a retry back
]


@pytest.mark.parametrize(("budget", "min_retries", "firsts", "retries", "allowed"), BUDGET_RULE)
def test_budget_rule(budget: float, min_retries: int, firsts: int, retries: int, allowed: bool) -> None:
    policy = RetryPolicy(budget=budget, budget_window=10.0, min_retries=min_retries)
    window = RetryBudget(policy)
    window.restore([(1.0, False)] * firsts + [(1.0, True)] * retries)
    assert window.allows_retry(5.0) is allowed


def test_budget_window_slides_and_free_at_is_when_time_alone_frees_it() -> None:
    policy = RetryPolicy(budget=0.2, budget_window=10.0, min_retries=1)
    window = RetryBudget(policy)
    window.record(0.0, retry=True)  # the minimum allowance
    window.record(1.0, retry=False)
    assert not window.allows_retry(5.0)
    # At 10.0 the retry of 0.0 leaves: one first attempt left, the minimum allowance is free.
    assert window.free_at(5.0) == 10.0
    assert not window.allows_retry(9.999)
    assert window.allows_retry(10.0)


@st.composite
def budget_schedules(draw: st.DrawFn) -> tuple[RetryPolicy, list[tuple[float, bool]]]:
    policy = RetryPolicy(
        budget=draw(st.sampled_from([0.05, 0.1, 0.2, 0.3, 0.5, 0.9, 1.0])),
        budget_window=draw(st.sampled_from([0.5, 1.0, 10.0])),
        min_retries=draw(st.integers(1, 4)),
    )
    steps = draw(
        st.lists(
            st.tuples(st.sampled_from([0.0, 0.0, 0.01, 0.1, 0.5, 1.0, 3.0]), st.booleans()),
            max_size=200,
        )
    )
    return policy, steps


@settings(max_examples=300, deadline=None)
@given(schedule=budget_schedules())
def test_retries_stay_within_the_budget_in_every_window(schedule: tuple[RetryPolicy, list]) -> None:
    """Admit first attempts always and retries whenever the budget allows; then, for every
    retry admission at s, the window (s - W, s] holds at most max(min_retries, budget × A)
    retries, counted independently of the budget's own bookkeeping."""
    policy, steps = schedule
    budget = RetryBudget(policy)
    now = 0.0
    admitted: list[tuple[float, bool]] = []
    for step, wants_retry in steps:
        now += step
        if not wants_retry:
            budget.record(now, retry=False)
            admitted.append((now, False))
            continue
        if budget.allows_retry(now):
            budget.record(now, retry=True)
            admitted.append((now, True))
        else:
            # Waiting is not forever: time alone frees it, no sooner than free_at says.
            free = budget.free_at(now)
            assert free > now
            assert free <= now + policy.budget_window
    window = policy.budget_window
    for at, retry in admitted:
        if not retry:
            continue
        inside = [r for t, r in admitted if t + window > at and t <= at]
        retries = sum(inside)
        assert retries <= max(policy.min_retries, policy.budget * len(inside) + 1e-9), (at, inside)


@settings(max_examples=200, deadline=None)
@given(schedule=budget_schedules(), probe=st.floats(0.0, 20.0))
def test_free_at_is_exact(schedule: tuple[RetryPolicy, list], probe: float) -> None:
    policy, steps = schedule
    budget = RetryBudget(policy)
    now = 0.0
    for step, retry in steps:
        now += step
        if not retry or budget.allows_retry(now):
            budget.record(now, retry=retry)
    free = budget.free_at(now)
    at = now + probe

    def replay() -> RetryBudget:
        copy = RetryBudget(policy)
        copy.restore(budget._log)
        return copy

    # free_at is the earliest moment a retry fits, nothing admitted meanwhile. (Not "from then
    # on": first attempts leaving the window later shrink the allowance again.)
    assert replay().allows_retry(free)
    if at < free:
        assert not replay().allows_retry(at)


# -- circuit breaker --------------------------------------------------------------

CIRCUIT = CircuitPolicy(
    failure_threshold=0.5, min_outcomes=4, window=10.0, open_for=2.0, max_open_for=5.0, half_open_probes=2
)


def test_circuit_opens_at_the_threshold_with_enough_outcomes() -> None:
    breaker = CircuitBreaker(CIRCUIT)
    for at, failed in [(0.0, True), (0.1, True), (0.2, True)]:
        breaker.record(failed=failed, admitted_at=at - 0.05, now=at)
    assert breaker.state(0.3) is CircuitState.CLOSED  # 3 failures, but fewer than min_outcomes
    breaker.record(failed=False, admitted_at=0.25, now=0.3)  # 3 of 4 failed
    assert breaker.state(0.3) is CircuitState.OPEN
    assert not breaker.admits(2.29)
    assert breaker.blocked_until(1.0) == pytest.approx(2.3)
    [change] = breaker.drain_changes()
    assert change.state is CircuitState.OPEN
    assert change.reason == "3 of 4 outcomes failed"


def test_failures_outside_the_window_do_not_count() -> None:
    breaker = CircuitBreaker(CIRCUIT)
    breaker.record(failed=True, admitted_at=0.0, now=0.0)
    breaker.record(failed=True, admitted_at=0.0, now=0.0)
    # 10 s later those two have left the window: 1 failure of 3 kept... then 2 of 4 = 50 %.
    for _ in range(2):
        breaker.record(failed=False, admitted_at=10.0, now=10.0)
    breaker.record(failed=True, admitted_at=10.0, now=10.0)
    assert breaker.state(10.0) is CircuitState.CLOSED
    breaker.record(failed=True, admitted_at=10.0, now=10.0)
    assert breaker.state(10.0) is CircuitState.OPEN


def _opened(now: float = 0.0) -> CircuitBreaker:
    breaker = CircuitBreaker(CIRCUIT)
    for _ in range(4):
        breaker.record(failed=True, admitted_at=now, now=now)
    assert breaker.state(now) is CircuitState.OPEN
    return breaker


def test_half_open_admits_its_probes_only_and_a_success_closes() -> None:
    breaker = _opened()
    assert breaker.state(2.0) is CircuitState.HALF_OPEN
    assert breaker.admits(2.0)
    breaker.on_admit(2.0)
    breaker.on_admit(2.1)
    assert not breaker.admits(2.2)  # both probes out
    assert breaker.blocked_until(2.2) is None  # an outcome decides, not the clock
    breaker.record(failed=True, admitted_at=-1.0, now=2.3)  # from before the open: ignored
    assert breaker.state(2.3) is CircuitState.HALF_OPEN
    breaker.record(failed=False, admitted_at=2.0, now=2.4)
    assert breaker.state(2.4) is CircuitState.CLOSED
    assert [c.state for c in breaker.drain_changes()] == [
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,
    ]


def test_a_failed_probe_reopens_for_longer_up_to_the_cap_and_a_close_resets_it() -> None:
    breaker = _opened()
    now = 0.0
    expected = [4.0, 5.0, 5.0]  # 2 doubled, then capped at max_open_for
    for open_for in expected:
        now = breaker.blocked_until(now) or now
        assert breaker.state(now) is CircuitState.HALF_OPEN
        breaker.on_admit(now)
        breaker.record(failed=True, admitted_at=now, now=now + 0.1)
        assert breaker.snapshot().open_for == open_for
        assert breaker.blocked_until(now + 0.1) == pytest.approx(now + 0.1 + open_for)
        now += 0.1
    now = breaker.blocked_until(now) or now
    breaker.on_admit(now)
    breaker.record(failed=False, admitted_at=now, now=now)
    assert breaker.snapshot().open_for == CIRCUIT.open_for


def test_a_probe_that_came_back_unused_is_given_back() -> None:
    breaker = _opened()
    breaker.on_admit(2.0)
    breaker.on_admit(2.0)
    assert not breaker.admits(2.0)
    breaker.on_returned(2.0, now=2.5)
    assert breaker.admits(2.5)
    breaker.on_returned(1.0, now=2.5)  # not a probe: changes nothing
    breaker.on_admit(2.5)
    assert not breaker.admits(2.5)


def test_a_disabled_circuit_never_opens() -> None:
    breaker = CircuitBreaker(CircuitPolicy(enabled=False, min_outcomes=1))
    for i in range(100):
        breaker.record(failed=True, admitted_at=float(i), now=float(i))
    assert breaker.admits(100.0)
    assert breaker.drain_changes() == []


def test_restore_recognises_the_probes_still_held() -> None:
    breaker = _opened()
    breaker.on_admit(2.0)
    snapshot = breaker.snapshot()
    rebuilt = CircuitBreaker(CIRCUIT)
    rebuilt.restore(snapshot, held_admitted_at=[-1.0, 2.0])  # one held from before, one probe
    assert rebuilt.state(2.5) is CircuitState.HALF_OPEN
    rebuilt.on_admit(2.5)
    assert not rebuilt.admits(2.5)  # 2 probes: the restored one and this one
    rebuilt.record(failed=False, admitted_at=2.0, now=2.6)  # the old leader's probe decides
    assert rebuilt.state(2.6) is CircuitState.CLOSED


@st.composite
def circuit_events(draw: st.DrawFn) -> tuple[CircuitPolicy, list[tuple[str, float]]]:
    policy = CircuitPolicy(
        failure_threshold=draw(st.sampled_from([0.1, 0.5, 0.9, 1.0])),
        min_outcomes=draw(st.integers(1, 5)),
        window=draw(st.sampled_from([1.0, 5.0])),
        open_for=draw(st.sampled_from([0.5, 1.0])),
        max_open_for=draw(st.sampled_from([1.0, 4.0])),
        half_open_probes=draw(st.integers(1, 3)),
    )
    kinds = st.sampled_from(["admit", "success", "failure", "returned", "wait"])
    events = draw(st.lists(st.tuples(kinds, st.sampled_from([0.0, 0.05, 0.3, 1.0, 2.5])), max_size=150))
    return policy, events


@settings(max_examples=300, deadline=None)
@given(case=circuit_events())
def test_an_open_circuit_admits_nothing_but_its_probes(case: tuple[CircuitPolicy, list]) -> None:
    """Admit whenever the breaker allows; then, reading its state changes independently:
    nothing is admitted while open, and at most `half_open_probes` (plus probes given back)
    in each half-open period."""
    policy, events = case
    breaker = CircuitBreaker(policy)
    now = 0.0
    outstanding: list[float] = []  # admitted_at of admissions with no outcome yet
    state = CircuitState.CLOSED
    since_half_open = 0  # admissions in the current half-open period, net of give-backs
    for kind, step in events:
        now += step
        for change in breaker.drain_changes():
            state = change.state
            since_half_open = 0
        current = breaker.state(now)
        for change in breaker.drain_changes():
            state = change.state
            since_half_open = 0
        assert current is state
        if kind == "admit":
            if breaker.admits(now):
                assert state is not CircuitState.OPEN
                breaker.on_admit(now)
                outstanding.append(now)
                if state is CircuitState.HALF_OPEN:
                    since_half_open += 1
                    assert since_half_open <= policy.half_open_probes
            else:
                assert state is not CircuitState.CLOSED
        elif kind in ("success", "failure", "returned") and outstanding:
            admitted_at = outstanding.pop(0)
            if kind == "returned":
                was_probe = state is CircuitState.HALF_OPEN and admitted_at >= breaker.snapshot().since
                breaker.on_returned(admitted_at, now)
                if was_probe:
                    since_half_open -= 1
            else:
                breaker.record(failed=kind == "failure", admitted_at=admitted_at, now=now)


# -- the Retry-After pause ----------------------------------------------------------

PAUSES = [
    # (retry_after, max_retry_after, pause length or None, clamped)
    (5.0, 600.0, 5.0, False),  # the usual 429
    (600.0, 600.0, 600.0, False),  # exactly the maximum
    (3600.0, 600.0, 600.0, True),  # a year-long pause from a buggy worker is clamped
    (0.0, 600.0, None, False),  # zero: no pause
    (None, 600.0, None, False),  # no retry_after at all
    (math.inf, 600.0, None, False),  # not a number of seconds (cannot come off the wire)
]


@pytest.mark.parametrize(("retry_after", "maximum", "length", "clamped"), PAUSES)
def test_pause_for(retry_after: float | None, maximum: float, length: float | None, clamped: bool) -> None:
    pause = pause_for(RetryPolicy(max_retry_after=maximum), retry_after, now=100.0)
    if length is None:
        assert pause is None
        return
    assert pause is not None
    assert pause.until == 100.0 + length
    assert pause.clamped is clamped


# -- through the scheduler ----------------------------------------------------------


def _scheduler(
    retry: RetryPolicy, circuit: CircuitPolicy | None = None, recovery: RecoveryPolicy | None = None
) -> Scheduler:
    api = DependencyPolicy(
        name="api",
        lease_timeout=100.0,
        admission_ttl=1.0,
        retry=retry,
        circuit=circuit or CircuitPolicy(),
        recovery=recovery or RecoveryPolicy(),
    )
    other = DependencyPolicy(name="other", lease_timeout=100.0, admission_ttl=1.0)
    return Scheduler([api, other], random.Random(1))


def _fail_all(s: Scheduler, now: float, retry_after: float | None = None) -> None:
    for job_id in sorted(s._lanes["api"].held):
        job = s.job(job_id)
        assert job is not None
        s.on_result(
            job_id=job_id, attempt=job.attempt, success=False, error="503", retry_after=retry_after, now=now
        )


def test_over_budget_retries_wait_without_an_attempt_and_first_attempts_pass_them() -> None:
    s = _scheduler(
        retry=RetryPolicy(base_delay=0.0, max_delay=0.0, jitter=0.0, budget=0.2, min_retries=1),
        circuit=CircuitPolicy(enabled=False),
    )
    for i in range(3):
        s.submit(job_id=f"r{i}", dependency="api", scope="s", payload=None, now=0.0)
    assert len(s.admit(0.0).admissions) == 3
    _fail_all(s, 0.1)
    for i in range(4):
        s.submit(job_id=f"f{i}", dependency="api", scope="s", payload=None, now=0.1)
    decision = s.admit(0.2)
    # 3 + 4 first attempts and 1 retry by the minimum allowance... then floor(0.2 × 8) = 1: no more.
    admitted = [a.job_id for a in decision.admissions]
    assert sorted(admitted) == ["f0", "f1", "f2", "f3", "r0"]
    assert s.retry_budget_parked() == {"api": 1, "other": 0}  # the scope: only retries left
    why = s.why("r1", 0.2)
    assert why is not None
    assert why[0].reason is WaitReason.RETRY_BUDGET
    # By time alone: at 10.0 the admissions of 0.0 leave, but 1 retry of 5 is still too many;
    # at 10.2 the window is empty and the minimum allowance lets one retry through.
    assert why[0].until == 10.2
    assert decision.next_wakeup == 10.2
    for job_id in ("r1", "r2"):
        job = s.job(job_id)
        assert job is not None
        assert job.failures == 1, "waiting for the budget costs no attempt"
    assert s.admit(10.0).admissions == []
    assert [a.job_id for a in s.admit(10.2).admissions] == ["r1"]


def test_a_first_attempt_brings_back_a_scope_parked_for_the_retry_budget() -> None:
    # The scope's queue holds only retries over the budget, so it is parked; a new first attempt
    # must not wait for the budget ("first attempts are never held back by it").
    s = _scheduler(
        retry=RetryPolicy(base_delay=0.0, max_delay=0.0, jitter=0.0, budget=0.2, min_retries=1),
        circuit=CircuitPolicy(enabled=False),
    )
    for i in range(3):
        s.submit(job_id=f"r{i}", dependency="api", scope="s", payload=None, now=0.0)
    assert len(s.admit(0.0).admissions) == 3
    _fail_all(s, 0.1)
    assert [a.job_id for a in s.admit(0.2).admissions] == ["r0"]  # the minimum allowance
    assert s.retry_budget_parked() == {"api": 1, "other": 0}
    s.submit(job_id="new", dependency="api", scope="s", payload=None, now=0.3)
    assert [a.job_id for a in s.admit(0.3).admissions] == ["new"]
    assert s.retry_budget_parked() == {"api": 1, "other": 0}, "its retries still wait for the budget"
    assert s.admit(0.4).admissions == []


def test_failures_open_the_circuit_for_the_dependency_only() -> None:
    s = _scheduler(
        retry=RetryPolicy(base_delay=0.0, max_delay=0.0, jitter=0.0, budget=1.0),
        circuit=CircuitPolicy(min_outcomes=2, open_for=5.0, half_open_probes=1),
    )
    for i in range(2):
        s.submit(job_id=f"a{i}", dependency="api", scope="s", payload=None, now=0.0)
    s.admit(0.0)
    _fail_all(s, 1.0)
    s.submit(job_id="o", dependency="other", scope="s", payload=None, now=1.0)
    decision = s.admit(1.0)
    assert [a.job_id for a in decision.admissions] == ["o"]
    [blocked] = decision.blocked
    assert (blocked.reason, blocked.limit, blocked.until) == (WaitReason.CIRCUIT, "circuit open", 6.0)
    # Half-open at 6: one probe.
    assert len(s.admit(6.0).admissions) == 1
    states, events = s.drain_gates()
    assert [e.kind for e in events] == ["circuit_open", "circuit_half_open"]
    assert [st.circuit.state for st in states] == [CircuitState.HALF_OPEN]


def test_retry_after_pauses_the_dependency_and_a_rebuild_keeps_the_pause() -> None:
    # Without the recovery ramp, which would admit one job a second after the pause (the new
    # leader measured no rate before it): tests/unit/test_recovery.py covers that.
    s = _scheduler(
        retry=RetryPolicy(base_delay=0.0, max_delay=0.0, jitter=0.0, max_retry_after=60.0),
        recovery=RECOVERY_OFF,
    )
    s.submit(job_id="x", dependency="api", scope="s", payload=None, now=0.0)
    s.admit(0.0)
    _fail_all(s, 1.0, retry_after=3600.0)  # clamped to 60 s
    s.submit(job_id="y", dependency="api", scope="s", payload=None, now=1.0)
    decision = s.admit(2.0)
    assert decision.admissions == []
    assert decision.blocked[0].reason is WaitReason.PAUSED
    assert decision.next_wakeup == 61.0
    states, events = s.drain_gates()
    assert [e.kind for e in events] == ["retry_after_clamped", "paused"]
    # A new leader, from what the store holds.
    unfinished = [job for job_id in ("x", "y") if (job := s.job(job_id)) is not None]
    assert len(unfinished) == 2
    rebuilt = Scheduler.rebuilt(
        s.policies.values(), Snapshot(jobs=unfinished, gates=states, max_seq=2), 2.0, random.Random(1)
    )
    assert rebuilt.admit(60.9).admissions == []
    assert sorted(a.job_id for a in rebuilt.admit(61.0).admissions) == ["x", "y"]
