"""Retry control inside the scheduler, over many random schedules (Hypothesis stateful).

A schedule interleaves submissions, clock moves, worker results (success, failure, failure
with retry_after), admissions returned unused, ticks and crashes (the core rebuilt from what
the store holds: jobs, admissions with their retry flag, and the persisted gates, as a new
leader does). After every step the machine checks, against its own record of what happened:

- in any budget window ending at a retry admission, retries <= max(min_retries, budget × admissions);
- nothing is admitted while a circuit is open, and a half-open circuit admits only its probes
  (plus the probes that came back unused);
- nothing of a dependency is admitted before a retry_after pause it got has ended;
and at the end, once the dependencies recover (every attempt succeeds), every job finishes.
"""

from __future__ import annotations

import random
from collections import defaultdict

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from janus.core.circuit import CircuitState
from janus.core.decisions import Verdict
from janus.core.gates import GateState
from janus.core.jobs import Admission, Job
from janus.core.policy import CircuitPolicy, DependencyPolicy, RateLimit, RetryPolicy
from janus.core.scheduler import Scheduler
from tests.unit.simulated_store import snapshot_of


@st.composite
def policies(draw: st.DrawFn, name: str) -> DependencyPolicy:
    return DependencyPolicy(
        name=name,
        rate_limits=draw(st.sampled_from([(), (RateLimit(count=4, window=1.0),)])),
        concurrency=draw(st.none() | st.integers(1, 4)),
        admission_ttl=0.2,
        lease_timeout=draw(st.sampled_from([0.7, 3.0])),
        retry=RetryPolicy(
            max_attempts=draw(st.integers(2, 6)),
            base_delay=draw(st.sampled_from([0.0, 0.1, 0.5])),
            max_delay=1.0,
            jitter=draw(st.sampled_from([0.0, 0.5])),
            budget=draw(st.sampled_from([0.1, 0.2, 0.5, 1.0])),
            budget_window=draw(st.sampled_from([1.0, 5.0])),
            min_retries=draw(st.integers(1, 3)),
            max_retry_after=draw(st.sampled_from([1.0, 4.0])),
        ),
        circuit=CircuitPolicy(
            enabled=draw(st.booleans()),
            failure_threshold=draw(st.sampled_from([0.3, 0.5, 1.0])),
            min_outcomes=draw(st.integers(1, 5)),
            window=draw(st.sampled_from([2.0, 10.0])),
            open_for=draw(st.sampled_from([0.5, 2.0])),
            max_open_for=draw(st.sampled_from([2.0, 6.0])),
            half_open_probes=draw(st.integers(1, 3)),
        ),
    )


class RetryControlMachine(RuleBasedStateMachine):
    @initialize(first=policies("alpha"), second=policies("beta"), seed=st.integers(0, 2**32 - 1))
    def setup(self, first: DependencyPolicy, second: DependencyPolicy, seed: int) -> None:
        self.policies = {first.name: first, second.name: second}
        self.scheduler = Scheduler(self.policies.values(), random.Random(seed))
        self.now = 1000.0
        self.next_id = 0
        self.step = 0
        self.admissions: dict[str, list[tuple[int, Admission]]] = defaultdict(list)  # (step, admission)
        self.held: dict[str, tuple[str, int]] = {}  # job -> (dependency, attempt)
        self.submitted: dict[str, str] = {}
        self.finished: set[str] = set()
        self.stored: dict[str, Job] = {}
        self.gates_stored: dict[str, GateState] = {}
        self.paused_until: dict[str, float] = defaultdict(lambda: float("-inf"))
        # The circuit as its state changes tell it: the state, open periods (step, from, until),
        # and per half-open period the admissions it made net of probes given back.
        self.circuit: dict[str, CircuitState] = defaultdict(lambda: CircuitState.CLOSED)
        self.half_open_since: dict[str, float] = {}
        self.probes: dict[str, int] = defaultdict(int)
        self.open_periods: dict[str, list[tuple[int, float, float]]] = defaultdict(list)

    # -- bookkeeping like the shell ---------------------------------------------

    def _commit(self) -> None:
        changes = self.scheduler.drain_changes()
        for job in [*changes.new, *changes.updated]:
            self.stored[job.job_id] = job
        states, events = self.scheduler.drain_gates()
        for state in states:
            self.gates_stored[state.dependency] = state
        for event in events:
            if event.circuit is None:
                continue
            dependency, snapshot = event.dependency, event.circuit
            self.circuit[dependency] = snapshot.state
            self.probes[dependency] = 0
            if snapshot.state is CircuitState.OPEN:
                assert snapshot.open_until is not None
                self.open_periods[dependency].append((self.step, event.at, snapshot.open_until))
            elif snapshot.state is CircuitState.HALF_OPEN:
                self.half_open_since[dependency] = snapshot.since

    def _failed(self, job_id: str, retry_after: float | None) -> None:
        dependency = self.submitted[job_id]
        if retry_after:
            policy = self.policies[dependency].retry
            until = self.scheduler.clock + min(retry_after, policy.max_retry_after)
            self.paused_until[dependency] = max(self.paused_until[dependency], until)

    # -- the world ------------------------------------------------------------

    @rule(step=st.sampled_from([0.0, 0.01, 0.1, 0.3, 0.5, 1.0, 2.5]))
    def clock_moves(self, step: float) -> None:
        self.now += step

    @rule(dependency=st.sampled_from(["alpha", "beta"]), count=st.integers(1, 4))
    def submit(self, dependency: str, count: int) -> None:
        for _ in range(count):
            job_id = f"job-{self.next_id}"
            self.next_id += 1
            self.scheduler.submit(job_id=job_id, dependency=dependency, scope="s", payload=None, now=self.now)
            self.submitted[job_id] = dependency
        self._commit()

    @rule()
    def tick(self) -> None:
        self.step += 1
        for transition in self.scheduler.expire_leases(self.now):
            assert transition.job is not None
            self.held.pop(transition.job.job_id, None)
            if transition.verdict is Verdict.DEAD:
                self.finished.add(transition.job.job_id)
        self._commit()  # a lease time-out may open a circuit before this tick admits anything
        self.step += 1
        decision = self.scheduler.admit(self.now)
        self._commit()  # half-open changes happen inside admit, before its admissions
        for admission in decision.admissions:
            dependency = admission.dependency
            assert admission.job_id not in self.held
            self.held[admission.job_id] = (dependency, admission.attempt)
            self.admissions[dependency].append((self.step, admission))
            # A pause admits nothing of its dependency until it ends.
            assert admission.admitted_at >= self.paused_until[dependency]
            # An open circuit admits nothing; a half-open one only its probes.
            for step, start, until in self.open_periods[dependency]:
                assert not (step < self.step and start <= admission.admitted_at < until), (start, until)
            if self.circuit[dependency] is CircuitState.HALF_OPEN:
                self.probes[dependency] += 1
                assert self.probes[dependency] <= self.policies[dependency].circuit.half_open_probes

    def _pick_held(self, data: st.DataObject) -> tuple[str, str, int] | None:
        if not self.held:
            return None
        job_id = data.draw(st.sampled_from(sorted(self.held)))
        dependency, attempt = self.held[job_id]
        return job_id, dependency, attempt

    @rule(data=st.data(), success=st.booleans(), retry_after=st.none() | st.sampled_from([0.5, 3.0, 100.0]))
    def worker_reports(self, data: st.DataObject, success: bool, retry_after: float | None) -> None:
        picked = self._pick_held(data)
        if picked is None:
            return
        job_id, _, attempt = picked
        transition = self.scheduler.on_result(
            job_id=job_id,
            attempt=attempt,
            success=success,
            error=None if success else "down",
            retry_after=None if success else retry_after,
            now=self.now,
        )
        del self.held[job_id]
        if not success:
            self._failed(job_id, retry_after)
        if transition.verdict in (Verdict.SUCCEEDED, Verdict.DEAD):
            self.finished.add(job_id)
        self._commit()

    @rule(data=st.data())
    def admission_returned_unused(self, data: st.DataObject) -> None:
        picked = self._pick_held(data)
        if picked is None:
            return
        job_id, dependency, attempt = picked
        job = self.scheduler.job(job_id)
        assert job is not None
        since = self.half_open_since.get(dependency)
        if (
            self.circuit[dependency] is CircuitState.HALF_OPEN
            and since is not None
            and job.admitted_at is not None
            and job.admitted_at >= since
        ):
            self.probes[dependency] -= 1  # a probe that never ran is given back
        assert (
            self.scheduler.on_returned(job_id=job_id, attempt=attempt, now=self.now).verdict
            is Verdict.RELEASED
        )
        del self.held[job_id]
        self._commit()

    @rule()
    def crash_and_rebuild(self) -> None:
        """A new leader: jobs, the admission history (with retry flags) and the gates from the store."""
        history = {
            dependency: [(a.scope, a.admitted_at, a.retry) for _, a in admissions]
            for dependency, admissions in self.admissions.items()
        }
        snapshot = snapshot_of(
            self.stored.values(),
            history,
            admissions_since=self.now - 10.0,
            budget_since=self.now - 10.0,
            gates=list(self.gates_stored.values()),
            first_attempts_in_memory=True,  # this model pages nothing: every waiting job in memory
        )
        rebuilt = Scheduler.rebuilt(self.policies.values(), snapshot, self.now, random.Random(self.step))
        assert all(rebuilt.job(job.job_id) is not None for job in snapshot.jobs)
        self.scheduler = rebuilt

    # -- invariants -------------------------------------------------------------

    @invariant()
    def retries_stay_within_the_budget(self) -> None:
        if not hasattr(self, "policies"):
            return
        for dependency, admissions in self.admissions.items():
            policy = self.policies[dependency].retry
            stamps = [(a.admitted_at, a.retry) for _, a in admissions]
            for at, retry in stamps[-12:]:
                if not retry:
                    continue
                inside = [r for t, r in stamps if t <= at and t + policy.budget_window > at]
                assert sum(inside) <= max(policy.min_retries, policy.budget * len(inside) + 1e-9)

    @precondition(lambda self: hasattr(self, "policies"))
    @rule()
    def nothing_is_lost(self) -> None:
        unfinished = set(self.submitted) - self.finished
        total = sum(s.ready + s.stored + s.delayed + s.held for s in self.scheduler.stats())
        assert total == len(unfinished)

    def teardown(self) -> None:
        if not hasattr(self, "policies"):
            return
        # The dependencies recover: every attempt succeeds. No job may be starved forever.
        for _ in range(5_000):
            if len(self.finished) == len(self.submitted):
                break
            self.now += 0.25
            self.tick()
            for job_id, (_, attempt) in sorted(self.held.items()):
                verdict = self.scheduler.on_result(
                    job_id=job_id, attempt=attempt, success=True, error=None, retry_after=None, now=self.now
                ).verdict
                assert verdict is Verdict.SUCCEEDED
                self.finished.add(job_id)
            self.held.clear()
            self._commit()
            self.retries_stay_within_the_budget()
        assert len(self.finished) == len(self.submitted), "a job was starved after the dependency recovered"


RetryControlMachine.TestCase.settings = settings(
    max_examples=250,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestRetryControlInvariants = RetryControlMachine.TestCase
