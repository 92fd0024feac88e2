"""Invariants 1-3 of the admission core, over many random schedules (Hypothesis stateful).

A schedule interleaves job submissions, clock moves (forward, and backward jumps), crashes
(the core rebuilt from what the store holds, as a new leader does),
worker results (success, failure, failure with retry_after, stale and unknown ones),
admissions returned unused, and ticks (lease expiry + admit), across two
dependencies with random policies. After every step the machine checks the
invariants against an independent model of what was admitted and held.
"""

from __future__ import annotations

import random
from collections import defaultdict

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from janus.audit import max_in_window
from janus.core.backoff import backoff_ceiling
from janus.core.decisions import Verdict
from janus.core.jobs import Admission, Job, JobState
from janus.core.policy import DependencyPolicy, FairnessPolicy, RateCounting, RateLimit, RetryPolicy
from janus.core.rebuild import history_since
from janus.core.scheduler import Scheduler
from tests.unit.simulated_store import page_for, snapshot_of

SCOPES = ["s1", "s2", "s3"]

rate_limits = st.lists(
    st.builds(
        RateLimit,
        count=st.integers(1, 6),
        window=st.sampled_from([0.5, 1.0, 2.5, 10.0]),
        counts=st.sampled_from(RateCounting),
    ),
    max_size=2,
).map(tuple)

retry_policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 4),
    base_delay=st.sampled_from([0.1, 0.5, 2.0]),
    max_delay=st.sampled_from([2.0, 5.0]),
    jitter=st.sampled_from([0.0, 0.3, 1.0]),
)


fairness_policies = st.builds(
    FairnessPolicy,
    default_weight=st.sampled_from([1.0, 0.5, 3.0]),
    weights=st.dictionaries(st.sampled_from(SCOPES), st.sampled_from([0.25, 1.0, 4.0]), max_size=3),
    scope_concurrency=st.none() | st.integers(1, 3),
    scope_rate_limits=st.lists(
        st.builds(
            RateLimit,
            count=st.integers(1, 3),
            window=st.sampled_from([0.5, 2.5]),
            counts=st.sampled_from(RateCounting),
        ),
        max_size=1,
    ).map(tuple),
)


@st.composite
def policies(draw: st.DrawFn, name: str) -> DependencyPolicy:
    ttl = draw(st.sampled_from([0.2, 1.0]))
    return DependencyPolicy(
        fairness=draw(fairness_policies),
        name=name,
        rate_limits=draw(rate_limits),
        concurrency=draw(st.none() | st.integers(1, 4)),
        admission_ttl=ttl,
        lease_timeout=ttl + draw(st.sampled_from([0.5, 3.0, 20.0])),
        retry=draw(retry_policies),
    )


class AdmissionMachine(RuleBasedStateMachine):
    @initialize(
        first=policies("alpha"),
        second=policies("beta"),
        seed=st.integers(0, 2**32 - 1),
        start=st.floats(0, 1e9),
        per_scope=st.sampled_from([1, 2, 4, 64]),
    )
    def setup(
        self, first: DependencyPolicy, second: DependencyPolicy, seed: int, start: float, per_scope: int
    ) -> None:
        self.policies = {first.name: first, second.name: second}
        # A small in-memory share per scope makes most first attempts live in the store, paged in.
        self.per_scope = (per_scope, per_scope)
        self.scheduler = Scheduler(self.policies.values(), random.Random(seed), per_scope=self.per_scope)
        self.now = start  # the wall clock the shell would read; may jump back
        self.next_id = 0
        self.admissions: dict[str, list[Admission]] = defaultdict(list)
        self.held: dict[str, dict[str, int]] = defaultdict(dict)  # dep -> job -> attempt
        self.failures: dict[str, int] = defaultdict(int)
        self.not_before: dict[str, float] = {}  # job -> earliest next admission (backoff)
        self.finished: set[str] = set()
        self.submitted: dict[str, str] = {}  # job -> dependency
        self.stored: dict[str, Job] = {}  # what the store holds: every change, committed after each step
        self.restarts = 0
        self.lapsed: dict[str, int] = {}  # job -> attempt whose lease ran out, retry pending
        self.workers: dict[str, int] = {}  # dependency -> consumers of its ready queue, as observed

    def _commit(self) -> None:
        """The shell writes every change of a step before it acts on it (one statement per tick)."""
        changes = self.scheduler.drain_changes()
        for job in [*changes.new, *changes.updated]:
            self.stored[job.job_id] = job

    # -- the world ------------------------------------------------------------

    # Steps just short of the window lengths probe the boundary of every sliding window.
    @rule(
        step=st.floats(0.0, 3.0)
        | st.sampled_from([0.0, 1e-9, 1e-3, 0.25, 0.499, 0.5, 0.999, 1.0, 2.499, 9.999])
    )
    def clock_moves_forward(self, step: float) -> None:
        self.now += step

    @rule(data=st.data(), epsilon=st.sampled_from([0.0, 1e-6, 1e-3]))
    def clock_to_a_window_edge(self, data: st.DataObject, epsilon: float) -> None:
        """Move to just before an admission leaves a window: where an off-by-one would show."""
        edges = sorted(
            {
                admission.admitted_at + limit.admission_window(policy.admission_ttl) - epsilon
                for name, policy in self.policies.items()
                for limit in policy.rate_limits
                for admission in self.admissions[name][-8:]
            }
        )
        if edges:
            self.now = max(self.now, data.draw(st.sampled_from(edges)))

    @rule(jump=st.floats(0.01, 5.0))
    def clock_jumps_back(self, jump: float) -> None:
        self.now -= jump

    @rule(dependency=st.sampled_from(["alpha", "beta"]), scope=st.sampled_from(SCOPES))
    def submit(self, dependency: str, scope: str) -> None:
        job_id = f"job-{self.next_id}"
        self.next_id += 1
        job = self.scheduler.submit(
            job_id=job_id, dependency=dependency, scope=scope, payload=None, now=self.now
        )
        assert job.state is JobState.WAITING
        self.submitted[job_id] = dependency
        self._commit()

    def _serve_pages(self) -> None:
        """What the shell does at the start of a tick: read the scopes' next first attempts."""
        for request in self.scheduler.page_requests():
            page = page_for(request, self.stored.values())
            assert self.scheduler.load_page(request, page), "the core's count of stored jobs drifted"

    @rule()
    def tick(self) -> None:
        self._serve_pages()
        for transition in self.scheduler.expire_leases(self.now):
            assert transition.job is not None
            self._on_failure(transition.job.job_id, transition.verdict, None)
            if transition.verdict is Verdict.RETRY_SCHEDULED:
                self.lapsed[transition.job.job_id] = transition.job.attempt
        decision = self.scheduler.admit(self.now)
        floor = self.scheduler.clock
        for admission in decision.admissions:
            job_id, dependency = admission.job_id, admission.dependency
            # Nothing goes to a ready queue nobody consumes (it would only expire there).
            assert self.workers.get(dependency) != 0
            # The try it is: failed attempts of its current life + 1, whatever the admission count.
            admitted = self.scheduler.job(job_id)
            assert admitted is not None
            assert admission.failures == admitted.failures
            assert admission.max_attempts == self.policies[dependency].retry.max_attempts
            # Invariant 3: a retry is never admitted before its backoff has passed.
            assert admission.admitted_at >= self.not_before.get(job_id, float("-inf"))
            assert admission.admitted_at == floor  # decided on the (monotonic) decision clock
            assert job_id not in self.held[dependency]
            assert job_id not in self.finished
            self.held[dependency][job_id] = admission.attempt
            self.lapsed.pop(job_id, None)
            self.admissions[dependency].append(admission)
        if decision.next_wakeup is not None:
            assert decision.next_wakeup >= floor or decision.next_wakeup == floor
        self._commit()

    @rule(dependency=st.sampled_from(["alpha", "beta"]), consumers=st.sampled_from([0, 1, 2]))
    def workers_come_or_go(self, dependency: str, consumers: int) -> None:
        self.workers[dependency] = consumers
        self.scheduler.observe_workers(dependency, consumers, f"janus.ready.{dependency}")

    @rule()
    def crash_and_rebuild(self) -> None:
        """kill -9 and a new leader: everything the core knew is rebuilt from the store alone,
        as the service does (unfinished jobs, and admissions within the longest window)."""
        admissions_since, budget_since = history_since(self.policies.values(), self.now)
        history = {
            dependency: [(a.scope, a.admitted_at, a.retry) for a in admissions]
            for dependency, admissions in self.admissions.items()
        }
        snapshot = snapshot_of(
            self.stored.values(), history, admissions_since=admissions_since, budget_since=budget_since
        )
        rebuilt = Scheduler.rebuilt(
            self.policies.values(), snapshot, self.now, random.Random(self.restarts), per_scope=self.per_scope
        )
        self.restarts += 1
        assert all(rebuilt.job(job.job_id) is not None for job in snapshot.jobs)
        for dependency, consumers in self.workers.items():  # observed again, not persisted
            rebuilt.observe_workers(dependency, consumers, f"janus.ready.{dependency}")
        self.scheduler = rebuilt
        self.lapsed.clear()  # the core keeps no memory of lapsed leases across a restart

    def _pick_held(self, data: st.DataObject) -> tuple[str, str, int] | None:
        candidates = sorted(
            (job, dep, attempt) for dep, jobs in self.held.items() for job, attempt in jobs.items()
        )
        if not candidates:
            return None
        return data.draw(st.sampled_from(candidates))

    @rule(data=st.data())
    def worker_succeeds(self, data: st.DataObject) -> None:
        picked = self._pick_held(data)
        if picked is None:
            return
        job_id, dependency, attempt = picked
        transition = self.scheduler.on_result(
            job_id=job_id, attempt=attempt, success=True, error=None, retry_after=None, now=self.now
        )
        assert transition.verdict is Verdict.SUCCEEDED
        del self.held[dependency][job_id]
        self.finished.add(job_id)
        self._commit()

    @rule(data=st.data(), retry_after=st.none() | st.floats(0.0, 30.0))
    def worker_fails(self, data: st.DataObject, retry_after: float | None) -> None:
        picked = self._pick_held(data)
        if picked is None:
            return
        job_id, dependency, attempt = picked
        transition = self.scheduler.on_result(
            job_id=job_id, attempt=attempt, success=False, error="boom", retry_after=retry_after, now=self.now
        )
        del self.held[dependency][job_id]
        self._on_failure(job_id, transition.verdict, retry_after, transition.job)
        self._commit()

    @rule(data=st.data())
    def admission_returned_unused(self, data: st.DataObject) -> None:
        picked = self._pick_held(data)
        if picked is None:
            return
        job_id, dependency, attempt = picked
        transition = self.scheduler.on_returned(job_id=job_id, attempt=attempt, now=self.now)
        assert transition.verdict is Verdict.RELEASED
        assert transition.job is not None
        # An admission that came back unused is not an attempt.
        assert transition.job.failures == self.failures[job_id]
        del self.held[dependency][job_id]
        self._commit()

    @rule(data=st.data(), outcome=st.booleans())
    def stale_or_unknown_result_changes_nothing(self, data: st.DataObject, outcome: bool) -> None:
        before = self.scheduler.stats()
        job_id = data.draw(st.sampled_from([*sorted(self.submitted), "never-submitted"]))
        job = self.scheduler.job(job_id)
        current = job.attempt if job is not None and job.state is JobState.ADMITTED else None
        attempt = data.draw(st.integers(0, 6).filter(lambda a: a != current))
        if outcome and self.lapsed.get(job_id) == attempt:
            return  # a late success for a lapsed lease: late_success_completes_the_job
        transition = self.scheduler.on_result(
            job_id=job_id, attempt=attempt, success=outcome, error=None, retry_after=None, now=self.now
        )
        assert transition.verdict in (Verdict.STALE_ATTEMPT, Verdict.UNKNOWN_JOB)
        assert self.scheduler.on_returned(job_id=job_id, attempt=attempt, now=self.now).verdict in (
            Verdict.STALE_ATTEMPT,
            Verdict.UNKNOWN_JOB,
        )
        assert self.scheduler.stats() == before

    @rule(data=st.data())
    def late_success_completes_the_job(self, data: st.DataObject) -> None:
        """The worker whose lease ran out reports success while the job waits for its retry."""
        if not self.lapsed:
            return
        job_id = data.draw(st.sampled_from(sorted(self.lapsed)))
        attempt = self.lapsed.pop(job_id)
        before = {s.dependency: s.held for s in self.scheduler.stats()}
        transition = self.scheduler.on_result(
            job_id=job_id, attempt=attempt, success=True, error=None, retry_after=None, now=self.now
        )
        assert transition.verdict is Verdict.SUCCEEDED
        assert transition.job is not None
        assert transition.job.state is JobState.SUCCEEDED
        assert self.scheduler.job(job_id) is None
        # No slot is freed: the lease's expiry freed it already.
        assert {s.dependency: s.held for s in self.scheduler.stats()} == before
        self.finished.add(job_id)
        self._commit()
        # A second report of the same attempt is stale now.
        again = self.scheduler.on_result(
            job_id=job_id, attempt=attempt, success=True, error=None, retry_after=None, now=self.now
        )
        assert again.verdict is Verdict.UNKNOWN_JOB

    def _on_failure(
        self, job_id: str, verdict: Verdict, retry_after: float | None, job: object = None
    ) -> None:
        dependency = self.submitted[job_id]
        self.held[dependency].pop(job_id, None)
        self.failures[job_id] += 1
        k = self.failures[job_id]
        policy = self.policies[dependency]
        learned = self.scheduler.clock
        current = self.scheduler.job(job_id)
        if k >= policy.retry.max_attempts:
            assert verdict is Verdict.DEAD
            assert current is None
            self.finished.add(job_id)
            self.lapsed.pop(job_id, None)
            return
        assert verdict is Verdict.RETRY_SCHEDULED
        assert current is not None
        assert current.state is JobState.WAITING
        assert current.failures == k
        d = backoff_ceiling(policy.retry, k)
        low = learned + d * (1 - policy.retry.jitter)
        high = learned + d
        if retry_after:
            low = max(low, learned + min(retry_after, policy.retry.max_retry_after))
            high = max(high, learned + min(retry_after, policy.retry.max_retry_after))
        # Invariant 3: eligible again no sooner than d(1 - jitter), no later than d.
        tolerance = 1e-9 * max(1.0, abs(learned))
        assert low - tolerance <= current.eligible_at <= high + tolerance
        self.not_before[job_id] = current.eligible_at

    # -- invariants -----------------------------------------------------------

    @invariant()
    def concurrency_never_exceeded(self) -> None:
        if not hasattr(self, "policies"):
            return
        for name, policy in self.policies.items():
            if policy.concurrency is not None:
                assert len(self.held[name]) <= policy.concurrency
        for stats in self.scheduler.stats():
            assert stats.held == len(self.held[stats.dependency])

    @invariant()
    def every_rate_window_holds(self) -> None:
        if not hasattr(self, "policies"):
            return
        for name, policy in self.policies.items():
            stamps = [a.admitted_at for a in self.admissions[name]]
            assert stamps == sorted(stamps), "admissions must be stamped on a monotonic clock"
            # Over each limit's span (T + admission_ttl when it counts starts): what keeps the
            # starts of workers that follow the protocol within COUNT per T (tests/unit/test_rate_meaning.py).
            ttl = policy.admission_ttl
            for limit in policy.rate_limits:
                assert max_in_window(stamps, limit.admission_window(ttl)) <= limit.count
            for scope in SCOPES:
                scope_stamps = [a.admitted_at for a in self.admissions[name] if a.scope == scope]
                for limit in policy.fairness.scope_rate_limits:
                    assert max_in_window(scope_stamps, limit.admission_window(ttl)) <= limit.count

    @invariant()
    def scope_concurrency_never_exceeded(self) -> None:
        if not hasattr(self, "policies"):
            return
        for name, policy in self.policies.items():
            cap = policy.fairness.scope_concurrency
            if cap is None:
                continue
            for scope in SCOPES:
                held = sum(1 for job_id in self.held[name] if self.stored[job_id].scope == scope)
                assert held <= cap

    @precondition(lambda self: hasattr(self, "policies"))
    @rule()
    def no_eligible_job_waits_forever(self) -> None:
        """Liveness: from any state, with time and successes, every job finishes (checked on a copy)."""
        # Checked cheaply: whatever waits is ready, delayed, or held; nothing vanishes.
        unfinished = set(self.submitted) - self.finished
        total = sum(s.ready + s.stored + s.delayed + s.held for s in self.scheduler.stats())
        assert total == len(unfinished)

    def teardown(self) -> None:
        if not hasattr(self, "policies"):
            return
        # Drain: workers come, time passes and every admission succeeds; every job must finish.
        for dependency in self.policies:
            self.workers_come_or_go(dependency, 1)
        for _ in range(10_000):
            if len(self.finished) == len(self.submitted):
                break
            self.now += 0.5
            self.tick()
            for dependency in list(self.held):
                for job_id, attempt in list(self.held[dependency].items()):
                    self.scheduler.on_result(
                        job_id=job_id,
                        attempt=attempt,
                        success=True,
                        error=None,
                        retry_after=None,
                        now=self.now,
                    )
                    del self.held[dependency][job_id]
                    self.finished.add(job_id)
            self.every_rate_window_holds()
        assert len(self.finished) == len(self.submitted), "some job never finished"


AdmissionMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestAdmissionInvariants = AdmissionMachine.TestCase
