"""The admission decision: which waiting jobs may run now, and why the rest wait.

One `Scheduler` holds every non-terminal job of the leader in memory, with one
`_Lane` per dependency. It is pure: the service feeds it events with the time
they are handled at, persists the jobs it changed, and publishes its admissions.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from janus.core.backoff import retry_delay
from janus.core.jobs import Admission, Job, JobState
from janus.core.policy import DependencyPolicy
from janus.core.rate import SlidingWindow


class WaitReason(StrEnum):
    CONCURRENCY = "concurrency"
    RATE = "rate"


class Verdict(StrEnum):
    """What an event did to a job. The first four change it; the others change nothing."""

    SUCCEEDED = "succeeded"
    RETRY_SCHEDULED = "retry_scheduled"
    DEAD = "dead"
    RELEASED = "released"  # admission returned unused: slot freed, no attempt charged
    UNKNOWN_JOB = "unknown_job"  # never seen, or already finished
    STALE_ATTEMPT = "stale_attempt"  # not the job's current admission


@dataclass(frozen=True, kw_only=True, slots=True)
class Transition:
    verdict: Verdict
    job: Job | None = None  # the job after the event, when it changed


@dataclass(frozen=True, kw_only=True, slots=True)
class Blocked:
    """A dependency that has jobs eligible now but may not admit them yet."""

    dependency: str
    reason: WaitReason
    limit: str  # which limit, e.g. "concurrency 20" or "rate 100/1s"
    until: float | None  # when it frees by the clock alone; None: when a slot is released
    waiting: int


@dataclass(frozen=True, kw_only=True, slots=True)
class AdmitDecision:
    admissions: list[Admission]
    blocked: list[Blocked]
    next_wakeup: float | None  # when calling admit() again may change something


@dataclass(frozen=True, kw_only=True, slots=True)
class Changes:
    new: list[Job]  # submitted since the last drain, in their latest state: to insert
    updated: list[Job]  # already stored: to update


@dataclass(frozen=True, kw_only=True, slots=True)
class LaneStats:
    dependency: str
    ready: int  # eligible now
    delayed: int  # waiting for backoff
    held: int  # admitted, no result yet


@dataclass(kw_only=True)
class _Lane:
    """Per-dependency state: budgets and the jobs waiting for them."""

    policy: DependencyPolicy
    windows: list[SlidingWindow]
    held: set[str] = field(default_factory=set)
    # Eligible jobs per scope, in the order they became eligible; scopes served round-robin.
    # (Weighted fair share replaces the round-robin in the fairness work.)
    ready: dict[str, deque[str]] = field(default_factory=dict)
    ready_count: int = 0
    scope_order: deque[str] = field(default_factory=deque)
    delayed: list[tuple[float, int, str]] = field(default_factory=list)  # (eligible_at, seq, job)

    def push_ready(self, scope: str, job_id: str) -> None:
        queue = self.ready.get(scope)
        if queue is None:
            queue = self.ready[scope] = deque()
            self.scope_order.append(scope)
        queue.append(job_id)
        self.ready_count += 1

    def remove_ready(self, scope: str, job_id: str) -> None:
        queue = self.ready[scope]
        queue.remove(job_id)  # O(scope's queue): only for the rare retraction
        self.ready_count -= 1
        if not queue:
            del self.ready[scope]
            self.scope_order.remove(scope)

    def pop_ready(self) -> str:
        scope = self.scope_order.popleft()
        queue = self.ready[scope]
        job_id = queue.popleft()
        self.ready_count -= 1
        if queue:
            self.scope_order.append(scope)
        else:
            del self.ready[scope]
        return job_id

    def discard_waiting(self, scope: str, job_id: str) -> None:
        """Take a waiting job out of the lane, ready or delayed. O(lane): only for late successes."""
        if job_id in self.ready.get(scope, ()):
            self.remove_ready(scope, job_id)
        else:
            self.delayed = [entry for entry in self.delayed if entry[2] != job_id]
            heapq.heapify(self.delayed)

    def block(self, now: float) -> Blocked | None:
        policy = self.policy
        if policy.concurrency is not None and len(self.held) >= policy.concurrency:
            return Blocked(
                dependency=policy.name,
                reason=WaitReason.CONCURRENCY,
                limit=f"concurrency {policy.concurrency}",
                until=None,
                waiting=self.ready_count,
            )
        for window in self.windows:
            if window.room(now) <= 0:
                return Blocked(
                    dependency=policy.name,
                    reason=WaitReason.RATE,
                    limit=f"rate {window.limit}",
                    until=window.free_at(now),
                    waiting=self.ready_count,
                )
        return None


class Scheduler:
    def __init__(self, policies: Iterable[DependencyPolicy], rng: random.Random) -> None:
        self._rng = rng
        self._lanes: dict[str, _Lane] = {}
        for policy in policies:
            self._lanes[policy.name] = _Lane(
                policy=policy, windows=[SlidingWindow(limit) for limit in policy.rate_limits]
            )
        self._jobs: dict[str, Job] = {}  # non-terminal jobs only
        self._leases: list[tuple[float, str, int]] = []  # (deadline, job_id, attempt), lazy
        self._changed: dict[str, Job] = {}
        self._new: set[str] = set()  # submitted since the last drain
        self._new_since_drain: set[str] = set()  # submitted before the last drain: retractable
        self._seq = 0
        # Jobs whose current attempt failed by its lease running out, waiting for their retry:
        # a success for that attempt may still arrive, and completes the job (docs/protocol.md).
        # In memory only: after a restart such a success is stale, which errs on the safe side.
        self._lapsed: dict[str, int] = {}
        # Decisions use a clock that never goes back: a backward jump must not let
        # a pruned admission leave a rate window it still belongs to.
        self._clock_floor = float("-inf")

    # -- inputs -------------------------------------------------------------

    def knows(self, dependency: str) -> bool:
        return dependency in self._lanes

    @property
    def policies(self) -> Mapping[str, DependencyPolicy]:
        return {name: lane.policy for name, lane in self._lanes.items()}

    def submit(self, *, job_id: str, dependency: str, scope: str, payload: object, now: float) -> Job:
        """A new job, eligible at once.

        The core knows only unfinished jobs: a `job_id` it does not know may still be a
        finished job in the store. The store tells when it writes the job, and the shell
        then `retract`s it, before anything of it has left the process.
        """
        now = self._advance(now)
        lane = self._lanes[dependency]
        if job_id in self._jobs:
            raise ValueError(f"job {job_id!r} is already known")
        job = Job(job_id=job_id, dependency=dependency, scope=scope, payload=payload, eligible_at=now)
        self._store(job)
        self._new.add(job_id)
        lane.push_ready(scope, job_id)
        return job

    def retract(self, job_id: str) -> None:
        """Undo a job submitted since the last `drain_changes` (the store already had it, finished).

        Its slot, if it was admitted meanwhile, is freed; its admission stays counted in the
        rate windows, which only errs on the safe side.
        """
        if job_id not in self._new_since_drain:
            raise ValueError(f"job {job_id!r} was not submitted in this round")
        job = self._jobs.pop(job_id)
        self._lapsed.pop(job_id, None)
        lane = self._lanes[job.dependency]
        if job.state is JobState.ADMITTED:
            lane.held.discard(job_id)
        else:
            lane.remove_ready(job.scope, job_id)

    def restore(self, job: Job) -> bool:
        """Reload a non-terminal job from the store. False if its dependency is not configured."""
        lane = self._lanes.get(job.dependency)
        if lane is None or job.state.terminal:
            return False
        self._jobs[job.job_id] = job
        if job.state is JobState.ADMITTED:
            lane.held.add(job.job_id)
            if job.lease_deadline is not None:
                heapq.heappush(self._leases, (job.lease_deadline, job.job_id, job.attempt))
            if job.admitted_at is not None:
                self._clock_floor = max(self._clock_floor, job.admitted_at)
        else:
            self._delay(lane, job)
        return True

    def restore_admissions(self, dependency: str, stamps: Iterable[float]) -> None:
        """Reload the admission history that still falls inside the rate windows."""
        lane = self._lanes.get(dependency)
        if lane is None:
            return
        stamps = sorted(stamps)
        for window in lane.windows:
            window.restore(stamps)
        if stamps:
            self._clock_floor = max(self._clock_floor, stamps[-1])

    def on_result(
        self,
        *,
        job_id: str,
        attempt: int,
        success: bool,
        error: str | None,
        retry_after: float | None,
        now: float,
    ) -> Transition:
        now = self._advance(now)
        taken = self._take_back(job_id, attempt)
        if isinstance(taken, Verdict):
            if success and self._lapsed.get(job_id) == attempt:
                return self._late_success(job_id, now)
            return Transition(verdict=taken)
        job, lane = taken
        if success:
            done = replace(job, state=JobState.SUCCEEDED, finished_at=now, last_error=None)
            self._finish(done)
            return Transition(verdict=Verdict.SUCCEEDED, job=done)
        return self._fail(lane, job, error or "failed", retry_after, now)

    def on_returned(self, *, job_id: str, attempt: int, now: float) -> Transition:
        """The admission came back unused (expired in the queue, rejected, or unpublishable)."""
        now = self._advance(now)
        taken = self._take_back(job_id, attempt)
        if isinstance(taken, Verdict):
            return Transition(verdict=taken)
        job, lane = taken
        waiting = replace(
            job,
            state=JobState.WAITING,
            eligible_at=now,
            admitted_at=None,
            expires_at=None,
            lease_deadline=None,
        )
        self._store(waiting)
        lane.push_ready(job.scope, job_id)
        return Transition(verdict=Verdict.RELEASED, job=waiting)

    def expire_leases(self, now: float) -> list[Transition]:
        """Admissions with no result by their lease deadline count as failed attempts."""
        now = self._advance(now)
        transitions: list[Transition] = []
        leases = self._leases
        while leases and leases[0][0] <= now:
            _, job_id, attempt = heapq.heappop(leases)
            taken = self._take_back(job_id, attempt)
            if isinstance(taken, Verdict):
                continue  # finished or re-admitted since: the heap entry is stale
            job, lane = taken
            timeout = lane.policy.lease_timeout
            transition = self._fail(lane, job, f"lease timed out after {timeout:g}s", None, now)
            if transition.verdict is Verdict.RETRY_SCHEDULED:
                self._lapsed[job_id] = attempt
            transitions.append(transition)
        return transitions

    # -- the decision -------------------------------------------------------

    def admit(self, now: float, *, limit: int | None = None) -> AdmitDecision:
        """Admit every eligible job the budgets allow at `now` (at most `limit`)."""
        now = self._advance(now)
        admissions: list[Admission] = []
        blocked: list[Blocked] = []
        wakeups: list[float] = []
        budget = limit if limit is not None else -1
        for lane in self._lanes.values():
            self._release_due(lane, now)
            while lane.ready_count and budget != 0:
                block = lane.block(now)
                if block is not None:
                    blocked.append(block)
                    if block.until is not None:
                        wakeups.append(block.until)
                    break
                admissions.append(self._admit_one(lane, lane.pop_ready(), now))
                budget -= 1
            if lane.delayed:
                wakeups.append(lane.delayed[0][0])
        if budget == 0:
            wakeups.append(now)  # cut short by `limit`: more may be admissible at once
        if self._leases:
            wakeups.append(self._leases[0][0])
        return AdmitDecision(admissions=admissions, blocked=blocked, next_wakeup=min(wakeups, default=None))

    def drain_changes(self) -> Changes:
        """Jobs submitted and jobs changed since the last call, latest state each: what to write."""
        new = [job for job_id, job in self._changed.items() if job_id in self._new]
        updated = [job for job_id, job in self._changed.items() if job_id not in self._new]
        self._changed.clear()
        self._new_since_drain = self._new
        self._new = set()
        return Changes(new=new, updated=updated)

    # -- inspection ---------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def stats(self) -> list[LaneStats]:
        return [
            LaneStats(dependency=name, ready=lane.ready_count, delayed=len(lane.delayed), held=len(lane.held))
            for name, lane in self._lanes.items()
        ]

    @property
    def clock(self) -> float:
        return self._clock_floor

    # -- internals ----------------------------------------------------------

    def _advance(self, now: float) -> float:
        if now > self._clock_floor:
            self._clock_floor = now
        return self._clock_floor

    def _take_back(self, job_id: str, attempt: int) -> tuple[Job, _Lane] | Verdict:
        """Free the slot of the job's current admission `attempt`; why not, if it is not current."""
        job = self._jobs.get(job_id)
        if job is None:
            return Verdict.UNKNOWN_JOB
        if job.state is not JobState.ADMITTED or job.attempt != attempt:
            return Verdict.STALE_ATTEMPT
        lane = self._lanes[job.dependency]
        lane.held.discard(job_id)
        return job, lane

    def _late_success(self, job_id: str, now: float) -> Transition:
        """The attempt whose lease ran out did succeed: the job is done, its retry cancelled.

        Its slot was already freed when the lease ran out, and nothing else is freed now.
        """
        job = self._jobs[job_id]
        self._lanes[job.dependency].discard_waiting(job.scope, job_id)
        done = replace(job, state=JobState.SUCCEEDED, finished_at=now, last_error=None)
        self._finish(done)
        return Transition(verdict=Verdict.SUCCEEDED, job=done)

    def _store(self, job: Job) -> None:
        self._jobs[job.job_id] = job
        self._changed[job.job_id] = job

    def _finish(self, job: Job) -> None:
        del self._jobs[job.job_id]
        self._lapsed.pop(job.job_id, None)
        self._changed[job.job_id] = job

    def _delay(self, lane: _Lane, job: Job) -> None:
        self._seq += 1
        heapq.heappush(lane.delayed, (job.eligible_at, self._seq, job.job_id))

    def _release_due(self, lane: _Lane, now: float) -> None:
        delayed = lane.delayed
        while delayed and delayed[0][0] <= now:
            _, _, job_id = heapq.heappop(delayed)
            job = self._jobs[job_id]
            lane.push_ready(job.scope, job_id)

    def _admit_one(self, lane: _Lane, job_id: str, now: float) -> Admission:
        policy = lane.policy
        job = self._jobs[job_id]
        admitted = replace(
            job,
            state=JobState.ADMITTED,
            attempt=job.attempt + 1,
            admitted_at=now,
            expires_at=now + policy.admission_ttl,
            lease_deadline=now + policy.lease_timeout,
        )
        self._store(admitted)
        self._lapsed.pop(job_id, None)
        lane.held.add(job_id)
        for window in lane.windows:
            window.record(now)
        heapq.heappush(self._leases, (now + policy.lease_timeout, job_id, admitted.attempt))
        return Admission.of(admitted)

    def _fail(self, lane: _Lane, job: Job, error: str, retry_after: float | None, now: float) -> Transition:
        retry = lane.policy.retry
        failures = job.failures + 1
        if failures >= retry.max_attempts:
            dead = replace(
                job,
                state=JobState.DEAD,
                failures=failures,
                last_error=error,
                finished_at=now,
            )
            self._finish(dead)
            return Transition(verdict=Verdict.DEAD, job=dead)
        delay = retry_delay(retry, failures, self._rng)
        if retry_after is not None and retry_after > 0:
            # The dependency asked for a pause: honour it for this job, within max_delay.
            delay = max(delay, min(retry_after, retry.max_delay))
        waiting = replace(
            job,
            state=JobState.WAITING,
            failures=failures,
            eligible_at=now + delay,
            admitted_at=None,
            expires_at=None,
            lease_deadline=None,
            last_error=error,
        )
        self._store(waiting)
        self._delay(lane, waiting)
        return Transition(verdict=Verdict.RETRY_SCHEDULED, job=waiting)
