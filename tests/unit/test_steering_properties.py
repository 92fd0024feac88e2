"""Steering the core live, over many random schedules (Hypothesis stateful).

The admission machine of test_scheduler_properties, with operators at work: new versions of
the policy (applied as the leader applies them: the core rebuilt from the store with the new
policies, a dependency removed and added back), pauses and resumes, overrides that end by
themselves or are cleared. Every admission is checked against the limits in force at its
instant: the policy of record with the override if one is in force, no admission while paused
or removed, and a rate limit counting every admission in its span, including those made under
an earlier policy. Nothing is lost or admitted twice, and once every dependency is configured
again, unpaused and without override, every job finishes.
"""

from __future__ import annotations

import dataclasses
import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from janus.core.jobs import Admission
from janus.core.policy import DependencyPolicy, RateLimit
from janus.core.rebuild import history_since
from janus.core.scheduler import Scheduler
from janus.core.steering import OperatorPause, Override, Steering
from tests.unit.simulated_store import snapshot_of
from tests.unit.test_scheduler_properties import SCOPES, AdmissionMachine, policies, rate_limits

NAMES = ["alpha", "beta"]


class SteeringMachine(AdmissionMachine):
    """`self.policies` holds every dependency's policy of record (a removed one: its last)."""

    removed: set[str]
    steering: dict[str, Steering]

    def _ensure(self) -> None:
        if not hasattr(self, "removed"):
            self.removed = set()
            self.steering = {name: Steering(dependency=name) for name in NAMES}

    def _in_force(self, dependency: str, at: float) -> DependencyPolicy | None:
        """The policy in force at `at`; None if nothing may be admitted then."""
        self._ensure()
        if dependency in self.removed:
            return None
        steering = self.steering[dependency].in_force(at)
        if steering.pause is not None:
            return None
        policy = self.policies[dependency]
        return policy if steering.override is None else steering.override.applied_to(policy)

    def _rebuild(self) -> None:
        """What the leader does at the start of a term and on a new version of the policy."""
        self._ensure()
        configured = [p for name, p in self.policies.items() if name not in self.removed]
        removed = [p for name, p in self.policies.items() if name in self.removed]
        every = [*configured, *removed]
        steering = list(self.steering.values())
        admissions_since, budget_since = history_since(every, self.now, steering)
        history = {
            dependency: [(a.scope, a.admitted_at, a.retry) for a in admissions]
            for dependency, admissions in self.admissions.items()
        }
        snapshot = snapshot_of(
            self.stored.values(), history, admissions_since=admissions_since, budget_since=budget_since
        )
        snapshot = dataclasses.replace(snapshot, steering=steering)
        self.scheduler = Scheduler.rebuilt(
            configured,
            snapshot,
            self.now,
            random.Random(self.restarts),
            per_scope=self.per_scope,
            removed=removed,
        )
        self.restarts += 1
        for dependency, consumers in self.workers.items():
            self.scheduler.observe_workers(dependency, consumers, f"janus.ready.{dependency}")
        self.lapsed.clear()

    @rule()
    def crash_and_rebuild(self) -> None:
        self._rebuild()

    @rule(data=st.data(), dependency=st.sampled_from(NAMES), remove=st.booleans())
    def apply_a_new_version(self, data: st.DataObject, dependency: str, remove: bool) -> None:
        """`janus apply`: a new policy for one dependency, or the dependency removed (or added back)."""
        self._ensure()
        if remove and len(self.removed) < len(NAMES) - 1:
            self.removed.add(dependency)
        else:
            self.removed.discard(dependency)
            self.policies[dependency] = data.draw(policies(dependency))
        self._rebuild()

    @rule(
        dependency=st.sampled_from(NAMES),
        lasts=st.none() | st.sampled_from([0.3, 1.0, 5.0]),
        by=st.sampled_from(["alice", "bob"]),
    )
    def pause(self, dependency: str, lasts: float | None, by: str) -> None:
        self._ensure()
        until = None if lasts is None else self.now + lasts
        self._steer(dependency, pause=OperatorPause(until=until, by=by))

    @rule(dependency=st.sampled_from(NAMES))
    def resume(self, dependency: str) -> None:
        self._ensure()
        self._steer(dependency, pause=None)

    @rule(
        dependency=st.sampled_from(NAMES),
        concurrency=st.none() | st.integers(1, 3),
        limits=st.none() | rate_limits,
        lasts=st.sampled_from([0.3, 1.0, 5.0]),
    )
    def override(
        self, dependency: str, concurrency: int | None, limits: tuple[RateLimit, ...] | None, lasts: float
    ) -> None:
        self._ensure()
        if concurrency is None and limits is None:
            concurrency = 1
        override = Override(until=self.now + lasts, by="carol", concurrency=concurrency, rate_limits=limits)
        if limits is None:
            self._steer(dependency, override=override)
        else:
            # Its windows must count admissions the lane's own may not hold (a longer span, or no
            # rate limit at all): the leader rebuilds from the store, as for a version.
            self.steering[dependency] = dataclasses.replace(self.steering[dependency], override=override)
            self._rebuild()

    @rule(dependency=st.sampled_from(NAMES))
    def clear_override(self, dependency: str) -> None:
        self._ensure()
        self._steer(dependency, override=None)

    _KEEP = object()

    def _steer(self, dependency: str, pause: object = _KEEP, override: object = _KEEP) -> None:
        before = self.steering[dependency]
        steering = Steering(
            dependency=dependency,
            pause=before.pause if pause is self._KEEP else pause,  # type: ignore[arg-type]
            override=before.override if override is self._KEEP else override,  # type: ignore[arg-type]
        )
        self.steering[dependency] = steering
        assert self.scheduler.steer(steering, self.now)

    @rule()
    def tick(self) -> None:
        before = {name: len(admissions) for name, admissions in self.admissions.items()}
        super().tick()
        for name, admissions in self.admissions.items():
            for admission in admissions[before.get(name, 0) :]:
                self._check_in_force(admission)

    def _check_in_force(self, admission: Admission) -> None:
        dependency, at = admission.dependency, admission.admitted_at
        policy = self._in_force(dependency, at)
        assert policy is not None, f"{dependency} admitted at {at} while paused or removed"
        held = self.held[dependency]
        if policy.concurrency is not None:
            assert len(held) <= policy.concurrency
        ttl = policy.admission_ttl
        stamps = [a.admitted_at for a in self.admissions[dependency]]
        for limit in policy.rate_limits:
            span = limit.admission_window(ttl)
            assert sum(1 for s in stamps if s + span > at) <= limit.count, (limit, at)
        fairness = policy.fairness
        scope_stamps = [a.admitted_at for a in self.admissions[dependency] if a.scope == admission.scope]
        for limit in fairness.scope_rate_limits:
            span = limit.admission_window(ttl)
            assert sum(1 for s in scope_stamps if s + span > at) <= limit.count
        if fairness.scope_concurrency is not None:
            in_scope = sum(1 for job_id in held if self.stored[job_id].scope == admission.scope)
            assert in_scope <= fairness.scope_concurrency

    # Checked at each admission against the limits in force then (a limit lowered since may be
    # exceeded by what was admitted before: those finish).
    @invariant()
    def concurrency_never_exceeded(self) -> None:
        if hasattr(self, "policies"):
            for stats in self.scheduler.stats():
                assert stats.held == len(self.held[stats.dependency])

    @invariant()
    def every_rate_window_holds(self) -> None:
        pass

    @invariant()
    def scope_concurrency_never_exceeded(self) -> None:
        pass

    @precondition(lambda self: hasattr(self, "policies"))
    @rule()
    def no_eligible_job_waits_forever(self) -> None:
        super().no_eligible_job_waits_forever()

    def teardown(self) -> None:
        if not hasattr(self, "policies"):
            return
        self._ensure()
        # Every dependency configured again, unpaused, without override: nothing is stranded.
        self.removed.clear()
        for name in NAMES:
            self.steering[name] = Steering(dependency=name)
        self._rebuild()
        super().teardown()
        assert len(self.finished) == len(self.submitted), "a job was stranded"
        assert SCOPES  # the scopes the parent machine submits to


SteeringMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestSteering = SteeringMachine.TestCase
