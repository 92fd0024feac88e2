"""Operators' steering in the core, case by case: pauses, overrides, removed dependencies."""

from __future__ import annotations

import random

from janus.core.decisions import WaitReason
from janus.core.policy import RECOVERY_OFF, DependencyPolicy, RateCounting, RateLimit, RecoveryPolicy
from janus.core.rebuild import Backlog, Snapshot, history_since
from janus.core.scheduler import Scheduler
from janus.core.steering import OperatorPause, Override, Steering

# The recovery ramp after a pause has a case of its own (the last below): off in the others.
POLICY = DependencyPolicy(name="api", lease_timeout=1000.0, admission_ttl=1.0, recovery=RECOVERY_OFF)


def per_second(count: int, window: float = 10.0) -> tuple[RateLimit, ...]:
    return (RateLimit(count=count, window=window, counts=RateCounting.ADMISSIONS),)


def core(policy: DependencyPolicy = POLICY, jobs: int = 20) -> Scheduler:
    s = Scheduler([policy], random.Random(0))
    for n in range(jobs):
        s.submit(job_id=f"j{n}", dependency="api", scope="default", payload=None, now=0.0)
    return s


def admitted(s: Scheduler, now: float) -> int:
    return len(s.admit(now).admissions)


def test_a_pause_admits_nothing_until_resumed_and_says_who() -> None:
    s = core()
    s.steer(Steering(dependency="api", pause=OperatorPause(until=None, by="alice: incident 7")), 0.0)
    decision = s.admit(1.0)
    assert decision.admissions == []
    (blocked,) = decision.blocked
    assert (blocked.reason, blocked.limit, blocked.until) == (
        WaitReason.PAUSED,
        "paused by alice: incident 7",
        None,
    )
    s.steer(Steering(dependency="api"), 2.0)
    assert admitted(s, 2.0) == 20


def test_a_pause_for_a_while_ends_by_itself_and_wakes_the_loop_then() -> None:
    s = core()
    s.steer(Steering(dependency="api", pause=OperatorPause(until=5.0, by="alice")), 0.0)
    decision = s.admit(1.0)
    assert decision.admissions == []
    assert decision.next_wakeup == 5.0
    assert admitted(s, 4.999) == 0
    assert admitted(s, 5.0) == 20
    assert s.steering("api").pause is None


def test_an_override_lowering_a_rate_counts_what_its_window_already_holds() -> None:
    s = core(
        DependencyPolicy(name="api", lease_timeout=1000.0, admission_ttl=1.0, rate_limits=per_second(10))
    )
    assert admitted(s, 0.0) == 10
    s.steer(
        Steering(dependency="api", override=Override(until=100.0, by="bob", rate_limits=per_second(4))), 1.0
    )
    decision = s.admit(5.0)
    assert decision.admissions == []  # 10 already in the window of 10 s: none more under 4/10s
    assert decision.blocked[0].limit == "rate 4/10s (overridden by bob)"
    assert admitted(s, 10.0) == 4


def test_when_an_override_ends_the_policy_counts_what_was_admitted_under_it() -> None:
    s = core(
        DependencyPolicy(name="api", lease_timeout=1000.0, admission_ttl=1.0, rate_limits=per_second(3)),
        jobs=13,
    )
    # A short window for the override: the policy's own window of 10 s must still see these.
    raised = Override(until=2.0, by="bob", rate_limits=per_second(10, window=1.0))
    s.steer(Steering(dependency="api", override=raised), 0.0)
    assert admitted(s, 0.0) == 10
    decision = s.admit(0.5)
    assert decision.next_wakeup is not None
    assert decision.next_wakeup <= 2.0  # wakes when it ends
    assert admitted(s, 2.0) == 0  # back to 3/10s with 10 in the window
    assert s.steering("api").override is None
    assert admitted(s, 10.0) == 3


def test_an_override_lowering_concurrency_lets_the_held_finish() -> None:
    s = core(DependencyPolicy(name="api", lease_timeout=1000.0, admission_ttl=1.0, concurrency=5))
    assert admitted(s, 0.0) == 5
    s.steer(Steering(dependency="api", override=Override(until=50.0, by="bob", concurrency=2)), 0.0)
    for n in range(3):
        s.on_result(job_id=f"j{n}", attempt=1, success=True, error=None, retry_after=None, now=1.0)
        assert admitted(s, 1.0) == 0  # 4, then 3, then 2 held: at the new cap
    s.on_result(job_id="j3", attempt=1, success=True, error=None, retry_after=None, now=1.0)
    assert admitted(s, 1.0) == 1
    assert admitted(s, 50.0) == 3  # the override ended: 5 again


def test_a_removed_dependency_admits_nothing_and_its_held_still_report() -> None:
    policy = DependencyPolicy(name="api", lease_timeout=1000.0, admission_ttl=1.0, concurrency=2)
    s = core(policy)
    held = s.admit(0.0).admissions
    assert len(held) == 2
    snapshot = Snapshot(
        jobs=[j for a in held if (j := s.job(a.job_id)) is not None],
        backlog=[Backlog(dependency="api", scope="default", waiting=18, max_seq=20)],
    )
    removed = Scheduler.rebuilt([], snapshot, 1.0, random.Random(0), removed=[policy])
    assert removed.removed == {"api"}
    assert removed.knows("api")
    decision = removed.admit(2.0)
    assert decision.admissions == []
    assert decision.blocked[0].reason is WaitReason.UNCONFIGURED
    done = removed.on_result(
        job_id=held[0].job_id, attempt=1, success=True, error=None, retry_after=None, now=2.0
    )
    assert done.job is not None
    assert done.job.state.value == "succeeded"


def test_a_rebuild_goes_on_with_the_override_and_its_history() -> None:
    policy = DependencyPolicy(name="api", lease_timeout=1000.0, admission_ttl=1.0, rate_limits=per_second(3))
    override = Override(until=2.0, by="bob", rate_limits=per_second(10, window=30.0))
    steering = Steering(dependency="api", override=override)
    since, _ = history_since([policy], 1.0, [steering])
    assert since <= 1.0 - 30.0, "the override's longer span reaches back"
    snapshot = Snapshot(admissions={"api": [("default", 0.5)] * 10}, steering=[steering])
    s = Scheduler.rebuilt([policy], snapshot, 1.0, random.Random(0))
    s.submit(job_id="x", dependency="api", scope="default", payload=None, now=1.0)
    assert s.steering("api").override == override
    assert admitted(s, 1.0) == 0  # 10 of 10 in the override's window
    assert admitted(s, 2.0) == 0  # the policy's 3/10s, with the same 10 admissions
    assert admitted(s, 10.5) == 1


def test_the_gauges_show_the_limits_in_force_and_who_steers_until_when() -> None:
    """Under an override the limit gauges are the override's alone (the policy's series go), and
    come back when it ends; a pause and an override show who, why and until when."""
    import math

    from janus.api.metrics import Metrics
    from janus.service.observe import Observer

    metrics = Metrics()
    observer = Observer(metrics)
    value = metrics.registry.get_sample_value
    s = core(
        DependencyPolicy(name="api", lease_timeout=1000.0, admission_ttl=1.0, rate_limits=per_second(10))
    )
    api = {"dependency": "api"}
    policy_rate = {"dependency": "api", "limit": "10/10s"}
    override_rate = {"dependency": "api", "limit": "4/10s"}
    observer.gauges(s)
    assert value("janus_rate_limit_count", policy_rate) == 10
    override = Override(until=100.0, by="bob: incident 7", concurrency=2, rate_limits=per_second(4))
    s.steer(Steering(dependency="api", override=override, pause=OperatorPause(until=None, by="alice")), 1.0)
    observer.gauges(s)
    assert value("janus_rate_limit_count", policy_rate) is None
    assert value("janus_rate_limit_window_seconds", policy_rate) is None
    assert value("janus_rate_limit_count", override_rate) == 4
    assert value("janus_concurrency_limit", api) == 2
    assert value("janus_dependency_overridden", api) == 1
    assert value("janus_dependency_paused", api) == 1
    steered = "janus_dependency_steering_until_timestamp_seconds"
    assert value(steered, {**api, "kind": "override", "by": "bob: incident 7"}) == 100.0
    assert value(steered, {**api, "kind": "pause", "by": "alice"}) == math.inf
    s.steer(Steering(dependency="api"), 2.0)  # resumed, and the override cleared
    observer.gauges(s)
    assert value("janus_rate_limit_count", override_rate) is None
    assert value("janus_rate_limit_count", policy_rate) == 10
    assert value("janus_concurrency_limit", api) is None  # the policy has no cap
    assert value("janus_dependency_overridden", api) == 0
    assert value("janus_dependency_paused", api) == 0
    assert value(steered, {**api, "kind": "override", "by": "bob: incident 7"}) is None
    assert value(steered, {**api, "kind": "pause", "by": "alice"}) is None


def test_the_end_of_an_operators_pause_starts_the_recovery_ramp() -> None:
    policy = DependencyPolicy(
        name="api",
        lease_timeout=1000.0,
        admission_ttl=1.0,
        rate_limits=per_second(10, window=1.0),
        recovery=RecoveryPolicy(ramp=10.0, start=0.2),
    )
    s = core(policy, jobs=100)
    s.steer(Steering(dependency="api", pause=OperatorPause(until=None, by="alice")), 0.0)
    assert admitted(s, 1.0) == 0
    s.steer(Steering(dependency="api"), 5.0)
    assert admitted(s, 5.0) == 2  # start x COUNT in the first second, not the whole window
    assert admitted(s, 20.0) == 10  # the ramp is over: the policy's limit again
