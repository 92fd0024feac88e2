"""The admission decision: which waiting jobs may run now, and why the rest wait.

One `Scheduler` holds every non-terminal job of the leader in memory, with one
`_Lane` per dependency. It is pure: the service feeds it events with the time
they are handled at, persists the jobs it changed, and publishes its admissions.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, Protocol

from janus.core.backoff import retry_delay
from janus.core.fairness import FairQueue, stride
from janus.core.gates import DependencyGates, GateEvent, GateState
from janus.core.jobs import Admission, Job, JobState, new_value
from janus.core.policy import DependencyPolicy
from janus.core.rate import SlidingWindow, admission_windows, rebuild_windows, same_windows
from janus.core.repeats import ERROR_OF_A_BARE_FAILURE, lease_timeout_error


class WaitReason(StrEnum):
    """Why a waiting job is not admitted now."""

    CONCURRENCY = "concurrency"  # the dependency's concurrency limit
    RATE = "rate"  # one of the dependency's rate limits
    SCOPE_CONCURRENCY = "scope_concurrency"  # its scope holds `scope_concurrency` slots
    SCOPE_RATE = "scope_rate"  # one of its scope's rate limits
    RETRY_BUDGET = "retry_budget"  # a retry, and the dependency's retries are over budget
    PAUSED = "paused"  # a worker's retry_after pauses the whole dependency
    CIRCUIT = "circuit"  # the dependency's circuit is open, or half-open with every probe out
    BACKOFF = "backoff"  # a retry, not eligible before `eligible_at`
    FAIR_SHARE = "fair_share"  # other scopes are further below their fair share
    QUEUED = "queued"  # earlier jobs of its own scope go first
    PAGING = "paging"  # its scope's next jobs are being read from the store


class Verdict(StrEnum):
    """What an event did to a job. The first four change it; the others change nothing."""

    SUCCEEDED = "succeeded"
    RETRY_SCHEDULED = "retry_scheduled"
    DEAD = "dead"
    RELEASED = "released"  # admission returned unused: slot freed, no attempt charged
    UNKNOWN_JOB = "unknown_job"  # never seen, or already finished
    STALE_ATTEMPT = "stale_attempt"  # not the job's current admission


class Transition(NamedTuple):
    """What an event did to a job (a NamedTuple, like `Job`: one is built per result)."""

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
class PageRequest:
    """Read the next first attempts of a scope from the store: seq > `after_seq`, in seq order."""

    dependency: str
    scope: str
    after_seq: int
    limit: int


@dataclass(frozen=True, kw_only=True, slots=True)
class WhyWaiting:
    """One reason a job waits; `until` is when it lifts by the clock alone, if known."""

    reason: WaitReason
    detail: str
    until: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class LaneStats:
    dependency: str
    ready: int  # eligible now, in memory
    stored: int  # eligible first attempts left in the store until their scope needs them
    delayed: int  # waiting for backoff
    held: int  # admitted, no result yet
    scopes: int  # scopes with eligible jobs


@dataclass(frozen=True, kw_only=True, slots=True)
class ScopeStats:
    dependency: str
    scope: str
    waiting: int  # eligible (in memory or stored) and backing off
    held: int
    admitted: int  # admissions since this leader's term began
    oldest_waiting_since: float | None  # eligible_at of its oldest eligible job in memory


_UNLIMITED = 1 << 62  # `_Lane.room` when no limit applies: more than any decision admits


class RetryGate(Protocol):
    """Decides whether a retry may be admitted now (the retry budget plugs in here)."""

    def allows_retry(self, now: float) -> bool: ...

    def retry_free_at(self, now: float) -> float | None: ...

    def record(self, now: float, *, retry: bool) -> None: ...

    def record_many(self, now: float, *, admissions: int, retries: int) -> None: ...


class NoRetryLimit:
    """Retries are admitted like first attempts."""

    def allows_retry(self, now: float) -> bool:
        return True

    def retry_free_at(self, now: float) -> float | None:
        return None

    def record(self, now: float, *, retry: bool) -> None:
        return None

    def record_many(self, now: float, *, admissions: int, retries: int) -> None:
        return None


# Most scopes never have a job eligible again (a retry, or an admission returned unused): they
# share this empty deque until their first one (`_Scope.add_again`), instead of each holding a
# deque of its own (about 600 bytes) that `admit` reads at every admission: at 10,000 scopes
# that read was a cache miss costing about 5 % of a decision. Never append to it.
_NO_AGAIN: deque[str] = deque()


@dataclass(kw_only=True, eq=False, slots=True)  # slots: faster attribute access on the hot path
class _Scope:
    """One scope of one dependency: its waiting jobs, its slots, its caps."""

    name: str
    windows: list[SlidingWindow]
    stride: int  # fairness.stride of its weight, worked out once (and again on a policy change)
    fresh: deque[str] = field(default_factory=deque)  # first attempts in memory, in seq order
    again: deque[str] = field(
        default_factory=lambda: _NO_AGAIN
    )  # admitted before, eligible again, in that order
    stored: int = 0  # first attempts only in the store: seq > loaded_upto
    loaded_upto: int = 0
    paging: bool = False  # a page request is out
    held: int = 0
    delayed: int = 0
    admitted: int = 0
    parked: WaitReason | None = None  # at a cap of its own: out of the fair queue until it lifts

    def add_again(self, job_id: str) -> None:
        """A job admitted before is eligible again: it queues behind the others."""
        if self.again is _NO_AGAIN:
            self.again = deque()
        self.again.append(job_id)

    @property
    def eligible(self) -> int:
        return len(self.fresh) + len(self.again) + self.stored

    @property
    def empty(self) -> bool:
        return not (self.fresh or self.again or self.stored or self.held or self.delayed)


@dataclass(kw_only=True, slots=True)
class _Lane:
    """Per-dependency state: budgets, scopes, and the fair queue between them."""

    policy: DependencyPolicy
    windows: list[SlidingWindow]
    gate: DependencyGates  # Retry-After pause, circuit breaker, retry budget (core/gates.py)
    retry_gate: RetryGate  # the gate itself, unless a test injects another
    held: set[str] = field(default_factory=set)
    scopes: dict[str, _Scope] = field(default_factory=dict)
    fair: FairQueue[str] = field(default_factory=FairQueue)
    eligible: int = 0  # jobs eligible now, over all scopes (in memory or stored)
    stored: int = 0  # of which first attempts left in the store
    delayed: list[tuple[float, int, str]] = field(default_factory=list)  # (eligible_at, seq, job)
    rate_parked: list[tuple[float, int, str]] = field(default_factory=list)  # (until, seq, scope)
    # Scopes parked for the retry budget, in the order they parked: they re-enter the fair queue
    # in that order (a set would order them by string hash, which varies between processes).
    retry_parked: dict[str, None] = field(default_factory=dict)
    retiring: list[tuple[float, int, str]] = field(default_factory=list)  # (at, seq, scope)

    def scope(self, name: str) -> _Scope:
        found = self.scopes.get(name)
        if found is None:
            fairness = self.policy.fairness
            found = self.scopes[name] = _Scope(
                name=name,
                windows=admission_windows(fairness.scope_rate_limits, self.policy.admission_ttl),
                stride=stride(fairness.weight(name)),
            )
        return found

    def wake(self, scope: _Scope) -> None:
        if scope.parked is None and scope.eligible:
            self.fair.activate(scope.name)

    def block(self, now: float) -> Blocked | None:
        policy = self.policy
        gate = self.gate.block(now)
        if gate is not None:
            return Blocked(
                dependency=policy.name,
                reason=WaitReason(gate.reason.value),
                limit=gate.limit,
                until=gate.until,
                waiting=self.eligible,
            )
        if policy.concurrency is not None and len(self.held) >= policy.concurrency:
            return Blocked(
                dependency=policy.name,
                reason=WaitReason.CONCURRENCY,
                limit=f"concurrency {policy.concurrency}",
                until=None,
                waiting=self.eligible,
            )
        for window in self.windows:
            if window.room(now) <= 0:
                return Blocked(
                    dependency=policy.name,
                    reason=WaitReason.RATE,
                    limit=f"rate {window.limit}",
                    until=window.free_at(now),
                    waiting=self.eligible,
                )
        return None

    def room(self, now: float) -> int:
        """How many admissions the dependency's own limits allow at `now`, where `block` is None:
        concurrency, every rate window, and the probes of a half-open circuit (_UNLIMITED if none).

        `admit` works this out once and then admits that many without asking `block` again:
        nothing but its own admissions changes these limits within one decision."""
        room = _UNLIMITED
        concurrency = self.policy.concurrency
        if concurrency is not None:
            room = concurrency - len(self.held)
        for window in self.windows:
            room = min(room, window.room(now))
        probes = self.gate.probes_left(now)
        if probes is not None:
            room = min(room, probes)
        return room

    def record_admissions(self, now: float, count: int, retries: int) -> None:
        """Tell the dependency's rate windows, retry budget and circuit about `count` admissions
        at `now` (`retries` of them retries): `admit` records them in batches (see `room`)."""
        for window in self.windows:
            window.record_many(now, count)
        self.retry_gate.record_many(now, admissions=count, retries=retries)
        self.gate.on_admit(now, count)

    def scope_cap(self, scope: _Scope, now: float) -> tuple[WaitReason, str, float | None] | None:
        """The scope's own cap that stops it now: (reason, limit, until)."""
        cap = self.policy.fairness.scope_concurrency
        if cap is not None and scope.held >= cap:
            return WaitReason.SCOPE_CONCURRENCY, f"scope concurrency {cap}", None
        for window in scope.windows:
            if window.room(now) <= 0:
                return WaitReason.SCOPE_RATE, f"scope rate {window.limit}", window.free_at(now)
        return None


# How many first attempts of one scope to keep in memory: the leader's memory follows
# the number of active scopes, not the backlog (the rest stay in the store, paged in).
MEMORY_BUDGET = 100_000  # first attempts in memory over all scopes, when there are few scopes
MIN_PER_SCOPE = 4
PAGE_ROWS_PER_TICK = 4096  # jobs paged in per tick, at most (about: whole pages)
MAX_PER_SCOPE = 1024


class Scheduler:
    def __init__(
        self,
        policies: Iterable[DependencyPolicy],
        rng: random.Random,
        *,
        retry_gates: Mapping[str, RetryGate] | None = None,
        memory_budget: int = MEMORY_BUDGET,
        per_scope: tuple[int, int] = (MIN_PER_SCOPE, MAX_PER_SCOPE),
    ) -> None:
        self._rng = rng
        self._memory_budget = memory_budget
        self._min_per_scope, self._max_per_scope = per_scope
        self._lanes: dict[str, _Lane] = {}
        gates = retry_gates or {}
        for policy in policies:
            gate = DependencyGates(policy)
            self._lanes[policy.name] = _Lane(
                policy=policy,
                windows=admission_windows(policy.rate_limits, policy.admission_ttl),
                gate=gate,
                retry_gate=gates.get(policy.name) or gate,
            )
        self._jobs: dict[str, Job] = {}  # non-terminal jobs in memory (first attempts may be stored only)
        # Lease deadlines, lazy (finished jobs' entries stay until they come up): one entry per
        # batch of admissions sharing a deadline, (deadline, serial, [(job_id, attempt), ...]),
        # so that an admission costs a list append rather than a push on a heap as long as the
        # leases held. `expire_leases` handles due entries in (deadline, job_id, attempt) order.
        self._leases: list[tuple[float, int, list[tuple[str, int]]]] = []
        self._lease_serial = itertools.count()
        self._changed: dict[str, Job] = {}
        # Submitted since the last drain, and before it (retractable): job -> (job, kept in memory?)
        self._new: dict[str, tuple[Job, bool]] = {}
        self._new_since_drain: dict[str, tuple[Job, bool]] = {}
        # Scopes to page in, in the order they asked (a new term asks in fair-queue order), and
        # the ones whose turn came with nothing in memory, served first.
        self._page_wanted: dict[tuple[str, str], None] = {}
        self._page_urgent: dict[tuple[str, str], None] = {}
        self._next_seq = 0  # the last seq handed out
        self._tiebreak = 0
        self._scope_count = 0
        self._per_scope_for = -1  # _per_scope() was worked out for this many scopes
        self._per_scope_value = 0
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

    def update_policy(self, policy: DependencyPolicy) -> None:
        """A config reload: new weights and caps apply from the next decision on.

        Rate and concurrency history stays; scope windows are rebuilt on the new limits
        with the admissions they still hold.
        """
        lane = self._lanes[policy.name]
        ttl = policy.admission_ttl
        if not same_windows(lane.windows, policy.rate_limits, ttl):
            lane.windows = rebuild_windows(lane.windows, policy.rate_limits, ttl)
        lane.policy = policy
        for scope in lane.scopes.values():
            scope.stride = stride(policy.fairness.weight(scope.name))
        scope_limits = policy.fairness.scope_rate_limits
        for scope in lane.scopes.values():
            if not same_windows(scope.windows, scope_limits, ttl):
                scope.windows = rebuild_windows(scope.windows, scope_limits, ttl)
        for scope in list(lane.scopes.values()):
            if scope.parked in (WaitReason.SCOPE_CONCURRENCY, WaitReason.SCOPE_RATE):
                self._unpark(lane, scope)  # re-checked against the new caps at its next turn

    def submit(self, *, job_id: str, dependency: str, scope: str, payload: object, now: float) -> Job:
        """A new job, eligible at once.

        The core knows only unfinished jobs: a `job_id` it does not know may still be a
        finished job in the store. The store tells when it writes the job, and the shell
        then `retract`s it, before anything of it has left the process. A first attempt
        behind a stored backlog stays in the store only (see `page_requests`).
        """
        now = self._advance(now)
        lane = self._lanes[dependency]
        if job_id in self._jobs or job_id in self._new:
            raise ValueError(f"job {job_id!r} is already known")
        self._next_seq += 1
        # Built positionally (jobs.new_value): this is on the path of every job.
        job = new_value(
            Job,
            (
                job_id,
                dependency,
                scope,
                payload,
                self._next_seq,  # seq
                JobState.WAITING,
                0,  # attempt
                0,  # failures
                now,  # eligible_at
                None,  # admitted_at
                None,  # expires_at
                None,  # lease_deadline
                None,  # last_error
                None,  # finished_at
            ),
        )
        state = lane.scopes.get(scope) or self._scope(lane, scope)
        keep = not state.stored and len(state.fresh) < self._per_scope()
        self._changed[job_id] = job
        self._new[job_id] = (job, keep)
        if keep:
            self._jobs[job_id] = job
            state.fresh.append(job_id)
            state.loaded_upto = job.seq
        else:
            state.stored += 1
            lane.stored += 1
            self._want_page(lane, state)
        lane.eligible += 1
        if state.parked is None:  # lane.wake, spelled out: the scope has a job eligible now
            lane.fair.activate(scope)
        return job

    def retract(self, job_id: str) -> None:
        """Undo a job submitted since the last `drain_changes` (the store already had it).

        Its slot, if it was admitted meanwhile, is freed; its admission stays counted in the
        rate windows, which only errs on the safe side.
        """
        entry = self._new_since_drain.pop(job_id, None)
        if entry is None:
            raise ValueError(f"job {job_id!r} was not submitted in this round")
        job, kept = entry
        lane = self._lanes[job.dependency]
        scope = lane.scopes[job.scope]
        current = self._jobs.pop(job_id, None)
        self._lapsed.pop(job_id, None)
        if not kept:
            scope.stored -= 1
            lane.stored -= 1
            lane.eligible -= 1
        elif current is not None and current.state is JobState.ADMITTED:
            lane.held.discard(job_id)
            scope.held -= 1
            self._unpark_if_below_cap(lane, scope)
            # A half-open circuit's probe that will never report must be given back.
            lane.gate.on_returned(current.admitted_at, self._clock_floor)
        else:
            scope.fresh.remove(job_id)  # O(scope's queue): only for the rare repeat
            lane.eligible -= 1
        if not scope.eligible:
            lane.fair.park(scope.name)
        self._maybe_retire(lane, scope)

    def restore(self, job: Job) -> bool:
        """Reload a non-terminal job from the store. False if its dependency is not configured.

        The shell restores held jobs and jobs admitted before (retries), and leaves a
        scope's first attempts in the store (`restore_backlog`); restoring a first
        attempt here keeps it in memory.
        """
        lane = self._lanes.get(job.dependency)
        if lane is None or job.state.terminal:
            return False
        self._jobs[job.job_id] = job
        self._next_seq = max(self._next_seq, job.seq)
        scope = self._scope(lane, job.scope)
        if job.state is JobState.ADMITTED:
            lane.held.add(job.job_id)
            scope.held += 1
            if job.lease_deadline is not None:
                entry = (job.lease_deadline, next(self._lease_serial), [(job.job_id, job.attempt)])
                heapq.heappush(self._leases, entry)
            if job.admitted_at is not None:
                self._clock_floor = max(self._clock_floor, job.admitted_at)
        elif job.attempt == 0:
            fresh = scope.fresh
            if fresh and self._jobs[fresh[-1]].seq > job.seq:
                ordered = sorted([*fresh, job.job_id], key=lambda j: self._jobs[j].seq)
                scope.fresh = deque(ordered)
            else:
                fresh.append(job.job_id)
            scope.loaded_upto = max(scope.loaded_upto, job.seq)
            lane.eligible += 1
            lane.wake(scope)
        else:
            self._delay(lane, scope, job)
        return True

    def restore_backlog(self, dependency: str, scope: str, *, count: int, max_seq: int) -> None:
        """A scope's first attempts left in the store (`count` of them, seq up to `max_seq`)."""
        lane = self._lanes.get(dependency)
        if lane is None or count <= 0:
            return
        state = self._scope(lane, scope)
        state.stored += count
        lane.stored += count
        lane.eligible += count
        self._next_seq = max(self._next_seq, max_seq)
        self._want_page(lane, state)
        lane.wake(state)

    def restore_admissions(self, dependency: str, admissions: Iterable[tuple[str, float]]) -> None:
        """Reload the admission history, (scope, admitted_at), that still falls inside the windows."""
        lane = self._lanes.get(dependency)
        if lane is None:
            return
        admissions = sorted(admissions, key=lambda pair: pair[1])
        stamps = [stamp for _, stamp in admissions]
        for window in lane.windows:
            window.restore(stamps)
        if lane.policy.fairness.scope_rate_limits:
            by_scope: dict[str, list[float]] = {}
            for scope, stamp in admissions:
                by_scope.setdefault(scope, []).append(stamp)
            for scope, scope_stamps in by_scope.items():
                for window in self._scope(lane, scope).windows:
                    window.restore(scope_stamps)
        if stamps:
            self._clock_floor = max(self._clock_floor, stamps[-1])

    def note_seq(self, seq: int) -> None:
        """The highest seq the store has handed out: new jobs go after it."""
        self._next_seq = max(self._next_seq, seq)

    def page_requests(self, max_rows: int = PAGE_ROWS_PER_TICK) -> list[PageRequest]:
        """Scopes whose first attempts in memory run low while more wait in the store.

        At most about `max_rows` jobs in all: a new term over ten thousand scopes must not
        read them all in one tick (the event loop, and with it the lease renewal, would
        wait). The rest are asked for at the next ticks, scopes whose turn has come first.
        """
        requests = []
        per_scope = self._per_scope()
        rows = 0
        for wanted in (self._page_urgent, self._page_wanted):
            while wanted and rows < max_rows:
                key = next(iter(wanted))
                del wanted[key]
                dependency, name = key
                scope = self._lanes[dependency].scopes.get(name)
                if scope is None or scope.paging or not scope.stored:
                    continue
                room = per_scope - len(scope.fresh)
                if room <= 0:
                    continue
                scope.paging = True
                rows += room
                requests.append(
                    PageRequest(dependency=dependency, scope=name, after_seq=scope.loaded_upto, limit=room)
                )
        return requests

    def load_page(self, request: PageRequest, jobs: Iterable[Job]) -> bool:
        """The store's answer to `request`: its first attempts in seq order.

        Returns False if the store had fewer than the core expected (the count is then
        corrected): the shell should log it, since it means a bookkeeping error.
        """
        lane = self._lanes[request.dependency]
        scope = self._scope(lane, request.scope)
        scope.paging = False
        loaded = 0
        for job in jobs:
            if job.job_id in self._jobs or job.seq <= scope.loaded_upto or job.state is not JobState.WAITING:
                continue
            self._jobs[job.job_id] = job
            scope.fresh.append(job.job_id)
            scope.loaded_upto = job.seq
            loaded += 1
        loaded = min(loaded, scope.stored)
        scope.stored -= loaded
        lane.stored -= loaded
        consistent = True
        if loaded < request.limit and scope.stored:
            # The store holds no more than that: trust it over the count.
            lane.eligible -= scope.stored
            lane.stored -= scope.stored
            scope.stored = 0
            consistent = False
        if not scope.eligible:
            lane.fair.park(scope.name)
            self._maybe_retire(lane, scope)
        else:
            lane.wake(scope)
            self._want_page(lane, scope)
        return consistent

    def restore_budget(self, dependency: str, admissions: Iterable[tuple[float, bool]]) -> None:
        """Reload the admissions (at, retry) still inside the retry budget's window."""
        lane = self._lanes.get(dependency)
        if lane is not None:
            lane.gate.budget.restore(admissions)

    def restore_gate(self, state: GateState) -> None:
        """Go on with a previous leader's circuit and pause; call after restoring the jobs."""
        lane = self._lanes.get(state.dependency)
        if lane is None:
            return
        held = [
            job.admitted_at for job_id in lane.held if (job := self._jobs[job_id]).admitted_at is not None
        ]
        lane.gate.restore(state, held)

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
            lane.gate.on_outcome(failed=False, admitted_at=job.admitted_at, now=now)
            if retry_after is not None:
                # The call succeeded, and the dependency still asked to back off (docs/protocol.md).
                lane.gate.pause(retry_after, now)
            # Built positionally (jobs.new_value): every job ends here. Field order of `Job`;
            # last_error is cleared.
            done = new_value(
                Job,
                (
                    job_id,
                    job.dependency,
                    job.scope,
                    job.payload,
                    job.seq,
                    JobState.SUCCEEDED,
                    job.attempt,
                    job.failures,
                    job.eligible_at,
                    job.admitted_at,
                    job.expires_at,
                    job.lease_deadline,
                    None,
                    now,
                ),
            )
            self._finish(lane, done)
            return new_value(Transition, (Verdict.SUCCEEDED, done))
        return self._fail(lane, job, error or ERROR_OF_A_BARE_FAILURE, retry_after, now)

    def on_returned(self, *, job_id: str, attempt: int, now: float) -> Transition:
        """The admission came back unused (expired in the queue, rejected, or unpublishable)."""
        now = self._advance(now)
        taken = self._take_back(job_id, attempt)
        if isinstance(taken, Verdict):
            return Transition(verdict=taken)
        job, lane = taken
        lane.gate.on_returned(job.admitted_at, now)
        waiting = job._replace(
            state=JobState.WAITING,
            eligible_at=now,
            admitted_at=None,
            expires_at=None,
            lease_deadline=None,
        )
        self._store(waiting)
        scope = lane.scopes[job.scope]
        scope.add_again(job_id)
        lane.eligible += 1
        lane.wake(scope)
        return Transition(verdict=Verdict.RELEASED, job=waiting)

    def expire_leases(self, now: float) -> list[Transition]:
        """Admissions with no result by their lease deadline count as failed attempts."""
        now = self._advance(now)
        transitions: list[Transition] = []
        leases = self._leases
        due: list[tuple[float, str, int]] = []
        while leases and leases[0][0] <= now:
            deadline, _, batch = heapq.heappop(leases)
            due.extend((deadline, job_id, attempt) for job_id, attempt in batch)
        due.sort()  # the order of one heap entry per lease: failures draw backoff jitter in this order
        for _, job_id, attempt in due:
            taken = self._take_back(job_id, attempt)
            if isinstance(taken, Verdict):
                continue  # finished or re-admitted since: the heap entry is stale
            job, lane = taken
            transition = self._fail(lane, job, lease_timeout_error(lane.policy.lease_timeout), None, now)
            if transition.verdict is Verdict.RETRY_SCHEDULED:
                self._lapsed[job_id] = attempt
            transitions.append(transition)
        return transitions

    # -- the decision -------------------------------------------------------

    def admit(self, now: float, *, limit: int | None = None) -> AdmitDecision:
        """Admit every eligible job the budgets allow at `now` (at most `limit`).

        Within a dependency, each admission goes to the scope furthest below its
        weighted fair share (`FairQueue`), and within the scope to the job that became
        eligible first.
        """
        now = self._advance(now)
        admissions: list[Admission] = []
        blocked: list[Blocked] = []
        wakeups: list[float] = []
        budget = limit if limit is not None else -1
        for lane in self._lanes.values():
            self._release_due(lane, now)
            gate = lane.retry_gate
            if budget != 0:
                budget = self._admit_lane(lane, now, budget, admissions, blocked, wakeups)
            if lane.retry_parked:
                free = gate.retry_free_at(now)
                if free is not None:
                    wakeups.append(free)
            if lane.rate_parked:
                wakeups.append(lane.rate_parked[0][0])
            if lane.delayed:
                wakeups.append(lane.delayed[0][0])
            self._retire_due(lane, now)
        if budget == 0:
            wakeups.append(now)  # cut short by `limit`: more may be admissible at once
        if self._leases:
            wakeups.append(self._leases[0][0])
        return AdmitDecision(admissions=admissions, blocked=blocked, next_wakeup=min(wakeups, default=None))

    def drain_changes(self) -> Changes:
        """Jobs submitted and jobs changed since the last call, latest state each: what to write."""
        new_ids = self._new
        new = [job for job_id, job in self._changed.items() if job_id in new_ids]
        updated = [job for job_id, job in self._changed.items() if job_id not in new_ids]
        self._changed.clear()
        self._new_since_drain = new_ids
        self._new = {}
        return Changes(new=new, updated=updated)

    # -- inspection ---------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        """A non-terminal job the core holds in memory (first attempts may be in the store only)."""
        return self._jobs.get(job_id)

    def stats(self) -> list[LaneStats]:
        return [
            LaneStats(
                dependency=name,
                ready=lane.eligible - lane.stored,
                stored=lane.stored,
                delayed=len(lane.delayed),
                held=len(lane.held),
                scopes=len(lane.fair),
            )
            for name, lane in self._lanes.items()
        ]

    def gate_states(self) -> list[GateState]:
        return [lane.gate.state() for lane in self._lanes.values()]

    def retry_budget_parked(self) -> dict[str, int]:
        """Per dependency: scopes whose next job is a retry waiting for the retry budget."""
        return {name: len(lane.retry_parked) for name, lane in self._lanes.items()}

    def drain_gates(self) -> tuple[list[GateState], list[GateEvent]]:
        """Gate states changed since the last call (to persist with the tick), and what happened."""
        states: list[GateState] = []
        events: list[GateEvent] = []
        for lane in self._lanes.values():
            state, happened = lane.gate.drain()
            if state is not None:
                states.append(state)
            events.extend(happened)
        return states, events

    def scope_stats(self, dependency: str, *, top: int | None = None) -> list[ScopeStats]:
        """Per scope, the largest backlogs first (`top` of them; O(scopes))."""
        lane = self._lanes[dependency]
        scopes = lane.scopes.values()
        chosen = (
            heapq.nlargest(top, scopes, key=lambda s: s.eligible + s.delayed)
            if top is not None
            else sorted(scopes, key=lambda s: -(s.eligible + s.delayed))
        )
        return [
            ScopeStats(
                dependency=dependency,
                scope=scope.name,
                waiting=scope.eligible + scope.delayed,
                held=scope.held,
                admitted=scope.admitted,
                oldest_waiting_since=self._oldest(scope),
            )
            for scope in chosen
        ]

    def oldest_waiting_since(self, dependency: str) -> float | None:
        """eligible_at of the dependency's oldest eligible job in memory (O(scopes))."""
        heads = (self._oldest(scope) for scope in self._lanes[dependency].scopes.values())
        return min((head for head in heads if head is not None), default=None)

    def why(self, job_id: str, now: float) -> list[WhyWaiting] | None:
        """Why a job held in memory waits, most immediate reason first; None if not waiting."""
        job = self._jobs.get(job_id)
        if job is None or job.state is not JobState.WAITING:
            return None
        lane = self._lanes[job.dependency]
        scope = lane.scopes[job.scope]
        if job.eligible_at > max(now, self._clock_floor):
            return [
                WhyWaiting(
                    reason=WaitReason.BACKOFF,
                    detail=f"retry {job.failures + 1} after {job.failures} failed attempts",
                    until=job.eligible_at,
                )
            ]
        queue = scope.fresh if job.attempt == 0 else scope.again
        ahead = queue.index(job_id) if job_id in queue else 0
        if job.attempt == 0:
            ahead += len(scope.again)  # a simplification: retries may also go first
        return self.why_scope(job.dependency, job.scope, now, ahead_in_scope=ahead)

    def in_memory_ahead(self, dependency: str, scope: str) -> int:
        """Jobs of a scope in memory that go before any of its first attempts still in the store."""
        state = self._lanes[dependency].scopes.get(scope)
        return len(state.fresh) + len(state.again) if state is not None else 0

    def why_scope(
        self, dependency: str, scope_name: str, now: float, *, ahead_in_scope: int = 0
    ) -> list[WhyWaiting]:
        """Why the next job of a scope (behind `ahead_in_scope` others of its scope) waits."""
        now = max(now, self._clock_floor)
        lane = self._lanes[dependency]
        reasons: list[WhyWaiting] = []
        block = lane.block(now)
        if block is not None:
            reasons.append(WhyWaiting(reason=block.reason, detail=block.limit, until=block.until))
        scope = lane.scopes.get(scope_name)
        if scope is not None:
            cap = lane.scope_cap(scope, now)
            if cap is not None:
                reasons.append(WhyWaiting(reason=cap[0], detail=cap[1], until=cap[2]))
            elif scope.parked is WaitReason.RETRY_BUDGET:
                reasons.append(
                    WhyWaiting(
                        reason=WaitReason.RETRY_BUDGET,
                        detail="the dependency's retries are over budget",
                        until=lane.retry_gate.retry_free_at(now),
                    )
                )
            if scope.paging or (scope.stored and not scope.fresh):
                reasons.append(WhyWaiting(reason=WaitReason.PAGING, detail="being read from the store"))
            if scope_name in lane.fair:
                rank = lane.fair.rank(scope_name)
                if rank:
                    reasons.append(
                        WhyWaiting(
                            reason=WaitReason.FAIR_SHARE,
                            detail=f"behind {rank} other scopes further below their fair share",
                        )
                    )
        if ahead_in_scope:
            reasons.append(
                WhyWaiting(
                    reason=WaitReason.QUEUED, detail=f"behind {ahead_in_scope} earlier jobs of its scope"
                )
            )
        return reasons

    @property
    def clock(self) -> float:
        return self._clock_floor

    def advance_clock(self, now: float) -> None:
        """Start a rebuilt core's clock at the time its term starts. Admissions older than every
        rate window are not reloaded, so without this floor a clock that jumps back after a
        takeover could stamp a new admission into a window beside them."""
        self._advance(now)

    # -- internals ----------------------------------------------------------

    def _advance(self, now: float) -> float:
        if now > self._clock_floor:
            self._clock_floor = now
        return self._clock_floor

    def _per_scope(self) -> int:
        # Asked at every submission: worked out again only when the number of scopes changed.
        if self._per_scope_for != self._scope_count:
            share = self._memory_budget // max(1, self._scope_count)
            self._per_scope_value = max(self._min_per_scope, min(self._max_per_scope, share))
            self._per_scope_for = self._scope_count
        return self._per_scope_value

    def _scope(self, lane: _Lane, name: str) -> _Scope:
        if name not in lane.scopes:
            self._scope_count += 1
        return lane.scope(name)

    def _want_page(self, lane: _Lane, scope: _Scope) -> None:
        if scope.stored and not scope.paging and len(scope.fresh) <= self._per_scope() // 2:
            self._page_wanted[(lane.policy.name, scope.name)] = None

    def _next_job(self, lane: _Lane, scope: _Scope, now: float, gate: RetryGate) -> str | None:
        """The scope's job to admit next: the one eligible first, retries only within budget."""
        fresh, again = scope.fresh, scope.again
        if again:
            head = self._jobs[again[0]]
            retry_ok = head.failures == 0 or gate.allows_retry(now)
            if retry_ok and (not fresh or head.eligible_at <= self._jobs[fresh[0]].eligible_at):
                if scope.stored and not fresh:
                    return None  # the stored first attempts may have become eligible earlier
                again.popleft()
                return head.job_id
        if fresh:
            return fresh.popleft()
        return None

    def _park(self, lane: _Lane, scope: _Scope, reason: WaitReason, until: float | None) -> None:
        scope.parked = reason
        lane.fair.park(scope.name)
        if reason is WaitReason.SCOPE_RATE and until is not None:
            self._tiebreak += 1
            heapq.heappush(lane.rate_parked, (until, self._tiebreak, scope.name))
        elif reason is WaitReason.RETRY_BUDGET:
            lane.retry_parked[scope.name] = None

    def _unpark(self, lane: _Lane, scope: _Scope) -> None:
        if scope.parked is WaitReason.RETRY_BUDGET:
            lane.retry_parked.pop(scope.name, None)
        scope.parked = None
        lane.wake(scope)

    def _unpark_if_below_cap(self, lane: _Lane, scope: _Scope) -> None:
        if scope.parked is WaitReason.SCOPE_CONCURRENCY:
            cap = lane.policy.fairness.scope_concurrency
            if cap is None or scope.held < cap:
                self._unpark(lane, scope)

    def _take_back(self, job_id: str, attempt: int) -> tuple[Job, _Lane] | Verdict:
        """Free the slot of the job's current admission `attempt`; why not, if it is not current."""
        job = self._jobs.get(job_id)
        if job is None:
            return Verdict.UNKNOWN_JOB
        if job.state is not JobState.ADMITTED or job.attempt != attempt:
            return Verdict.STALE_ATTEMPT
        lane = self._lanes[job.dependency]
        lane.held.discard(job_id)
        scope = lane.scopes[job.scope]
        scope.held -= 1
        if scope.parked is WaitReason.SCOPE_CONCURRENCY:
            self._unpark_if_below_cap(lane, scope)
        return job, lane

    def _late_success(self, job_id: str, now: float) -> Transition:
        """The attempt whose lease ran out did succeed: the job is done, its retry cancelled.

        Its slot was already freed when the lease ran out, and nothing else is freed now.
        O(lane) to take it out of its queue: late successes are rare.
        """
        job = self._jobs[job_id]
        lane = self._lanes[job.dependency]
        scope = lane.scopes[job.scope]
        if job_id in scope.again:  # eligible again, waiting for its turn
            scope.again.remove(job_id)
            lane.eligible -= 1
            if not scope.eligible:
                lane.fair.park(scope.name)
        else:  # still in its backoff
            lane.delayed = [entry for entry in lane.delayed if entry[2] != job_id]
            heapq.heapify(lane.delayed)
            scope.delayed -= 1
        done = job._replace(state=JobState.SUCCEEDED, finished_at=now, last_error=None)
        self._finish(lane, done)
        return Transition(verdict=Verdict.SUCCEEDED, job=done)

    def _store(self, job: Job) -> None:
        self._jobs[job.job_id] = job
        self._changed[job.job_id] = job

    def _finish(self, lane: _Lane, job: Job) -> None:
        del self._jobs[job.job_id]
        if self._lapsed:
            self._lapsed.pop(job.job_id, None)
        self._changed[job.job_id] = job
        scope = lane.scopes[job.scope]
        if scope.parked is None and scope.empty:  # checked here first: the call is rarely needed
            self._maybe_retire(lane, scope)

    def _delay(self, lane: _Lane, scope: _Scope, job: Job) -> None:
        self._tiebreak += 1
        scope.delayed += 1
        heapq.heappush(lane.delayed, (job.eligible_at, self._tiebreak, job.job_id))

    def _release_due(self, lane: _Lane, now: float) -> None:
        delayed = lane.delayed
        while delayed and delayed[0][0] <= now:
            _, _, job_id = heapq.heappop(delayed)
            job = self._jobs[job_id]
            scope = lane.scopes[job.scope]
            scope.delayed -= 1
            scope.add_again(job_id)
            lane.eligible += 1
            lane.wake(scope)
        parked = lane.rate_parked
        while parked and parked[0][0] <= now:
            _, _, name = heapq.heappop(parked)
            capped = lane.scopes.get(name)
            if capped is not None and capped.parked is WaitReason.SCOPE_RATE:
                self._unpark(lane, capped)
        if lane.retry_parked and lane.retry_gate.allows_retry(now):
            for name in list(lane.retry_parked):
                self._unpark(lane, lane.scopes[name])

    def _admit_lane(
        self,
        lane: _Lane,
        now: float,
        budget: int,
        admissions: list[Admission],
        blocked: list[Blocked],
        wakeups: list[float],
    ) -> int:
        """Admit from one dependency while `budget` (-1: no limit) and its limits allow; returns
        the budget left. Appends to `admissions`, `blocked` and `wakeups`.

        This is the hot path (issue 3), so it is written for speed, with the same decisions as
        asking every limit before every admission:
        - The dependency's own limits (pause, circuit, concurrency, rate windows) change within
          one decision only through its own admissions: `room` says once how many they allow,
          and `block` is asked again only when that many have been admitted. The admissions
          are told to the rate windows, the retry budget and the circuit in batches
          (`record_admissions`), always before anything reads them: before `block` and `room`,
          before a scope's retry asks the budget, and at the end.
        - Scope caps are checked per admission (a scope may be served again in the same
          decision), but only if the dependency has any.
        - The admitted job and its admission are tuples built positionally (jobs.new_value);
          the lease deadline goes into one heap entry for the whole batch.
        """
        fair = lane.fair
        if fair.peek() is None:
            return budget
        policy = lane.policy
        scopes, jobs, changed, lapsed, held = lane.scopes, self._jobs, self._changed, self._lapsed, lane.held
        fairness = policy.fairness
        scope_windows = bool(fairness.scope_rate_limits)  # every scope has windows, or none has
        capped = fairness.scope_concurrency is not None or scope_windows
        expires_at, lease_deadline = now + policy.admission_ttl, now + policy.lease_timeout
        admitted_state = JobState.ADMITTED
        leases: list[tuple[str, int]] = []
        room = 0  # admissions the dependency's limits allow before `block` must be asked again
        pending = retries = 0  # admitted, not yet recorded (record_admissions)
        while budget != 0:
            name = fair.peek()
            if name is None:
                break
            if room <= 0:
                if pending:
                    lane.record_admissions(now, pending, retries)
                    pending = retries = 0
                block = lane.block(now)
                if block is not None:
                    blocked.append(block)
                    if block.until is not None:
                        wakeups.append(block.until)
                    break
                room = lane.room(now)
            scope = scopes[name]
            if capped:
                cap = lane.scope_cap(scope, now)
                if cap is not None:
                    self._park(lane, scope, cap[0], cap[2])
                    continue
            job_id: str | None
            if scope.again:
                if pending:  # _next_job may ask the retry budget
                    lane.record_admissions(now, pending, retries)
                    pending = retries = 0
                job_id = self._next_job(lane, scope, now, lane.retry_gate)
            else:
                job_id = scope.fresh.popleft() if scope.fresh else None
            if job_id is None:
                if scope.stored and not scope.fresh:
                    # Its next jobs are in the store: stop the lane rather than pass over the
                    # scope's turn (which would bend the bound); the next tick pages them in.
                    blocked.append(
                        Blocked(
                            dependency=policy.name,
                            reason=WaitReason.PAGING,
                            limit=f"reading scope {name!r}",
                            until=now,
                            waiting=lane.eligible,
                        )
                    )
                    self._page_urgent[(policy.name, name)] = None
                    wakeups.append(now)
                    break
                self._park(lane, scope, WaitReason.RETRY_BUDGET, None)
                continue
            # One unpacking is cheaper than eight attribute reads. Field order of `Job`.
            (
                _,  # job_id
                dependency,
                scope_name,
                payload,
                seq,
                _,  # state
                attempt,
                failures,
                eligible_at,
                _,  # admitted_at
                _,  # expires_at
                _,  # lease_deadline
                last_error,
                _,  # finished_at
            ) = jobs[job_id]
            attempt += 1
            admitted = new_value(
                Job,
                (
                    job_id,
                    dependency,
                    scope_name,
                    payload,
                    seq,
                    admitted_state,
                    attempt,
                    failures,
                    eligible_at,
                    now,  # admitted_at
                    expires_at,
                    lease_deadline,
                    last_error,
                    None,  # finished_at
                ),
            )
            jobs[job_id] = admitted
            changed[job_id] = admitted
            if lapsed:
                lapsed.pop(job_id, None)
            held.add(job_id)
            lane.eligible -= 1
            scope.held += 1
            scope.admitted += 1
            if scope_windows:
                for window in scope.windows:
                    window.record(now)
            pending += 1
            if failures:
                retries += 1
            fair.charge(name, scope.stride)
            if not (scope.fresh or scope.again or scope.stored):
                fair.park(name)
            elif scope.stored:
                self._want_page(lane, scope)
            leases.append((job_id, attempt))
            admissions.append(
                new_value(
                    Admission,
                    (
                        job_id,
                        dependency,
                        scope_name,
                        payload,
                        attempt,
                        now,
                        expires_at,
                        lease_deadline,
                        failures > 0,  # retry
                    ),
                )
            )
            budget -= 1
            room -= 1
        if pending:
            lane.record_admissions(now, pending, retries)
        if leases:
            heapq.heappush(self._leases, (lease_deadline, next(self._lease_serial), leases))
        return budget

    def _fail(self, lane: _Lane, job: Job, error: str, retry_after: float | None, now: float) -> Transition:
        retry = lane.policy.retry
        failures = job.failures + 1
        gate = lane.gate
        gate.on_outcome(failed=True, admitted_at=job.admitted_at, now=now)
        # The dependency said it is overloaded: nothing of it until then (clamped), this job included.
        pause = gate.pause(retry_after, now)
        if failures >= retry.max_attempts:
            dead = job._replace(
                state=JobState.DEAD,
                failures=failures,
                last_error=error,
                finished_at=now,
            )
            self._finish(lane, dead)
            return Transition(verdict=Verdict.DEAD, job=dead)
        eligible_at = now + retry_delay(retry, failures, self._rng)
        if pause is not None:
            eligible_at = max(eligible_at, pause.until)
        waiting = job._replace(
            state=JobState.WAITING,
            failures=failures,
            eligible_at=eligible_at,
            admitted_at=None,
            expires_at=None,
            lease_deadline=None,
            last_error=error,
        )
        self._store(waiting)
        self._delay(lane, lane.scopes[job.scope], waiting)
        return Transition(verdict=Verdict.RETRY_SCHEDULED, job=waiting)

    def _oldest(self, scope: _Scope) -> float | None:
        heads = [self._jobs[queue[0]].eligible_at for queue in (scope.fresh, scope.again) if queue]
        return min(heads, default=None)

    def _maybe_retire(self, lane: _Lane, scope: _Scope) -> None:
        """Forget an empty scope once its own rate windows are clear (its fair-share pass is kept)."""
        if not scope.empty or scope.parked is not None:
            return
        clear_at = max((window.clear_at() for window in scope.windows), default=float("-inf"))
        self._tiebreak += 1
        heapq.heappush(lane.retiring, (clear_at, self._tiebreak, scope.name))

    def _retire_due(self, lane: _Lane, now: float) -> None:
        retiring = lane.retiring
        while retiring and retiring[0][0] <= now:
            _, _, name = heapq.heappop(retiring)
            scope = lane.scopes.get(name)
            if scope is None or not scope.empty or scope.parked is not None or name in lane.fair:
                continue
            if any(window.clear_at() > now for window in scope.windows):
                continue  # admitted again since it was queued here; queued again when it empties
            del lane.scopes[name]
            self._scope_count -= 1
