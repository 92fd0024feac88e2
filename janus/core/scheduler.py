"""The scheduler: every non-terminal job of the leader, and the events and questions about them.

One `Scheduler` holds every non-terminal job in memory (`Ledger`), with one `Lane` per
dependency (`core/lane.py`). It is pure: the service feeds it events with the time they are
handled at, persists the jobs it changed, and publishes its admissions. The decision itself
is `core/admission.py`; what the shell reads out of it (views, and the changes to persist) is
`core/readout.py`, and the answers to "why" are `core/explain.py`; its values are
`core/decisions.py`.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Iterable, Mapping

from janus.core import pages
from janus.core.admission import admit_lane
from janus.core.backoff import retry_delay
from janus.core.decisions import (
    AdmitDecision,
    Blocked,
    Changes,
    PageRequest,
    Transition,
    Verdict,
    WaitReason,
)
from janus.core.jobs import Admission, Job, JobState, first_attempt, new_value, succeeded
from janus.core.lane import Lane
from janus.core.ledger import Ledger
from janus.core.paging import MAX_PER_SCOPE, MEMORY_BUDGET, MIN_PER_SCOPE, PAGE_ROWS_PER_TICK, Pager
from janus.core.policy import DependencyPolicy
from janus.core.readout import Readout
from janus.core.rebuild import Snapshot
from janus.core.repeats import ERROR_OF_A_BARE_FAILURE, lease_timeout_error
from janus.core.steering import Steering

# Module globals read faster than enum members through their class: asked at every result.
_ADMITTED, _SCOPE_CONCURRENCY = JobState.ADMITTED, WaitReason.SCOPE_CONCURRENCY
_SUCCEEDED = Verdict.SUCCEEDED


class Scheduler(Readout):
    def __init__(
        self,
        policies: Iterable[DependencyPolicy],
        rng: random.Random,
        *,
        memory_budget: int = MEMORY_BUDGET,
        per_scope: tuple[int, int] = (MIN_PER_SCOPE, MAX_PER_SCOPE),
    ) -> None:
        self._rng = rng
        self._ledger = ledger = Ledger()
        self._jobs = ledger.jobs
        self._changed = ledger.changed
        self._lapsed = ledger.lapsed
        self._pager = pager = Pager(memory_budget, per_scope)
        self._lanes: dict[str, Lane] = {policy.name: Lane.of(policy, ledger, pager) for policy in policies}
        # Submitted since the last drain, and before it (retractable): job -> (job, kept in memory?)
        self._new: dict[str, tuple[Job, bool]] = {}
        self._new_since_drain: dict[str, tuple[Job, bool]] = {}
        self._next_seq = 0  # the last seq handed out
        # Decisions use a clock that never goes back: a backward jump must not let
        # a pruned admission leave a rate window it still belongs to.
        self._clock_floor = float("-inf")

    # -- inputs -------------------------------------------------------------

    def knows(self, dependency: str) -> bool:
        """A dependency of the policy of record, or one removed from it whose jobs the core keeps."""
        return dependency in self._lanes

    @property
    def policies(self) -> Mapping[str, DependencyPolicy]:
        """Every dependency the core holds, removed ones included (their held admissions still report)."""
        return {name: lane.policy for name, lane in self._lanes.items()}

    @property
    def removed(self) -> frozenset[str]:
        """Dependencies removed from the policy of record: they admit nothing (`unconfigured`)."""
        return frozenset(name for name, lane in self._lanes.items() if lane.removed)

    def steer(self, steering: Steering, now: float) -> bool:
        """An operator's pause and override of a dependency, as they stand (core/steering.py):
        in force from the next decision on. False if the dependency is unknown.

        An override's rate limits count the admissions the lane's windows hold: one that counts
        over a longer span than they do (or where the policy has no rate limit) needs the
        history from the store, i.e. `rebuilt` with the steering in the snapshot."""
        lane = self._lanes.get(steering.dependency)
        if lane is None:
            return False
        lane.steer(steering, self._advance(now))
        return True

    def steering(self, dependency: str) -> Steering:
        lane = self._lanes[dependency]
        return Steering(dependency=dependency, pause=lane.operator_pause, override=lane.override)

    def observe_workers(self, dependency: str, consumers: int, queue: str) -> bool:
        """The broker's count of consumers of the dependency's ready queue (named `queue`); with
        none, nothing of it is admitted (core/workers.py). True if that changed either way."""
        return self._lanes[dependency].gate.workers.observe(consumers, queue)

    def update_policy(self, policy: DependencyPolicy) -> None:
        """A config reload: new weights and caps apply from the next decision on.

        Rate and concurrency history stays; scope windows are rebuilt on the new limits
        with the admissions they still hold.
        """
        self._lanes[policy.name].update_policy(policy)

    def submit(
        self, *, job_id: str, dependency: str, scope: str, payload: object, now: float, cost: float = 1.0
    ) -> Job:
        """A new job, eligible at once.

        The core knows only unfinished jobs: a `job_id` it does not know may still be a
        finished job in the store. The store tells when it writes the job, and the shell
        then `retract`s it, before anything of it has left the process. A first attempt
        behind a stored backlog stays in the store only (see `page_requests`).
        """
        if now > self._clock_floor:  # self._advance(now), inlined: once per job
            self._clock_floor = now
        else:
            now = self._clock_floor
        lane = self._lanes[dependency]
        if job_id in self._jobs or job_id in self._new:
            raise ValueError(f"job {job_id!r} is already known")
        self._next_seq += 1
        job = first_attempt(job_id, dependency, scope, payload, self._next_seq, now, cost)
        state = lane.scopes.get(scope) or lane.scope(scope)
        keep = not state.stored and len(state.fresh) < self._pager.per_scope()
        self._changed[job_id] = job
        self._new[job_id] = (job, keep)
        if keep:
            self._jobs[job_id] = job
            state.fresh.append(job_id)
            state.loaded_upto = job.seq
        else:
            state.stored += 1
            lane.stored += 1
            lane.want_page(state)
        lane.eligible += 1
        if state.parked is None:  # lane.wake, spelled out: the scope has a job eligible now
            lane.fair.activate(scope)
        elif state.parked is WaitReason.RETRY_BUDGET:
            lane.unpark(state)  # the retry budget never holds a first attempt back
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
            lane.unpark_if_below_cap(scope)
            # A half-open circuit's probe that will never report must be given back.
            lane.gate.on_returned(current.admitted_at, self._clock_floor)
        else:
            scope.fresh.remove(job_id)  # O(scope's queue): only for the rare repeat
            lane.eligible -= 1
        if not scope.eligible:
            lane.fair.park(scope.name)
        lane.maybe_retire(scope)

    @classmethod
    def rebuilt(
        cls,
        policies: Iterable[DependencyPolicy],
        snapshot: Snapshot,
        now: float,
        rng: random.Random,
        *,
        memory_budget: int = MEMORY_BUDGET,
        per_scope: tuple[int, int] = (MIN_PER_SCOPE, MAX_PER_SCOPE),
        removed: Iterable[DependencyPolicy] = (),
    ) -> Scheduler:
        """A core rebuilt from the store at `now`, the start of a term: the jobs it held, the
        backlogs, and every budget (rate windows, retry budgets, circuits, pauses) as the last
        leader left them, with the operators' pauses and overrides. Dependencies `removed` from
        the policy of record (their last policy) keep their jobs and admit nothing; what belongs
        to dependencies configured in neither is left out."""
        removed = list(removed)
        core = cls([*policies, *removed], rng, memory_budget=memory_budget, per_scope=per_scope)
        lanes = core._lanes
        for policy in removed:
            lanes[policy.name].removed = True
        for steering in snapshot.steering:  # before the admissions: kept windows get them too
            if (steered := lanes.get(steering.dependency)) is not None:
                steered.steer(steering, now)
        for job in snapshot.jobs:
            core.restore(job)
        for entry in snapshot.backlog:
            backlog_lane = lanes.get(entry.dependency)
            if backlog_lane is not None and entry.waiting > 0:
                backlog_lane.restore_backlog(entry.scope, entry.waiting)
            core._next_seq = max(core._next_seq, entry.max_seq)
        core._next_seq = max(core._next_seq, snapshot.max_seq)
        last_admitted: dict[str, float] = {}
        for dependency, admissions in snapshot.admissions.items():
            lane = lanes.get(dependency)
            latest = lane.restore_admissions(admissions) if lane is not None else None
            if latest is not None:
                core._clock_floor = max(core._clock_floor, latest)
                last_admitted[dependency] = latest
        for dependency, charges in snapshot.unit_admissions.items():
            if (lane := lanes.get(dependency)) is not None:
                lane.restore_units(charges)
        for dependency, flagged in snapshot.budget_admissions.items():
            if (lane := lanes.get(dependency)) is not None:
                lane.gate.budget.restore(flagged)
        for state in snapshot.gates:
            if (lane := lanes.get(state.dependency)) is not None:
                lane.restore_gate(state, now)
        for name, lane in lanes.items():
            # Afresh (e.g. turned on by `janus apply`): the static limits' throttles are not its own.
            if lane.adaptive is not None:
                lane.adaptive.begin(now, last_admitted.get(name))
        for adaptive in snapshot.adaptive:  # a new leader goes on from the last limits
            if (lane := lanes.get(adaptive.dependency)) is not None and lane.adaptive is not None:
                lane.adaptive.restore(adaptive, now)
        # Admissions older than every rate window are not reloaded: without this floor, a clock
        # that jumps back after a takeover could stamp a new admission into a window beside them.
        core._advance(now)
        return core

    def restore(self, job: Job) -> bool:
        """Hold an unfinished job from the store (rebuilding, or a dead job made waiting again).
        False if it is finished or its dependency is not configured.

        A rebuild restores held jobs and jobs admitted before (retries), and leaves a scope's
        first attempts in the store (`Snapshot.backlog`); restoring a first attempt here keeps
        it in memory.
        """
        lane = self._lanes.get(job.dependency)
        if lane is None or job.state.terminal:
            return False
        self._jobs[job.job_id] = job
        self._next_seq = max(self._next_seq, job.seq)
        scope = lane.scope(job.scope)
        if job.state is JobState.ADMITTED:
            lane.held.add(job.job_id)
            scope.held += 1
            if job.lease_deadline is not None:
                self._ledger.add_leases(job.lease_deadline, [(job.job_id, job.attempt)])
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
            lane.delay(scope, job)
        return True

    def page_requests(self, max_rows: int = PAGE_ROWS_PER_TICK) -> list[PageRequest]:
        """Scopes whose first attempts in memory run low while more wait in the store: at most
        about `max_rows` jobs in all (core/pages.py)."""
        pager = self._pager
        if not (pager.urgent or pager.wanted):  # pages.page_requests' first test: asked every tick
            return []
        return pages.page_requests(self._lanes, pager, max_rows)

    def load_page(self, request: PageRequest, jobs: Iterable[Job]) -> bool:
        """The store's answer to `request`: its first attempts in seq order.

        Returns False if the store had fewer than the core expected (the count is then
        corrected): the shell should log it, since it means a bookkeeping error.
        """
        lane = self._lanes[request.dependency]
        scope = lane.scope(request.scope)
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
            lane.maybe_retire(scope)
        else:
            lane.wake(scope)
            lane.want_page(scope)
        return consistent

    def on_result(
        self,
        *,
        job_id: str,
        attempt: int,
        success: bool,
        error: str | None,
        retry_after: float | None,
        now: float,
        throttled: bool = False,
        duration: float | None = None,
        cost: float | None = None,
    ) -> Transition:
        """A worker's result; `cost`: the attempt's actual units, settled in place of its estimate."""
        if now > self._clock_floor:  # self._advance(now), inlined: once per result
            self._clock_floor = now
        else:
            now = self._clock_floor
        taken = self._take_back(job_id, attempt)
        if isinstance(taken, Verdict):
            if success and self._lapsed.get(job_id) == attempt:
                return self._late_success(job_id, now)
            return Transition(verdict=taken)
        job, lane = taken
        if lane.adaptive is not None:  # a failure's retry_after says "slow down" too
            slow_down = not success and (throttled or retry_after is not None)
            lane.adaptive.observe(
                admitted_at=job.admitted_at, throttled=slow_down, duration=duration, now=now
            )
        if duration is not None:  # the call ran that long and ended by `now`, and began before expiry
            expires = job.expires_at if job.expires_at is not None else now
            lane.trim(job, min(now - duration, expires))
        if cost is not None and lane.units is not None:
            lane.settle_units(job, cost)
        if success:
            lane.gate.on_outcome(failed=False, admitted_at=job.admitted_at, now=now)
            if retry_after is not None:
                # The call succeeded, and the dependency still asked to back off (docs/protocol.md).
                lane.gate.pause(retry_after, now)
            done = succeeded(job, now)
            self._finish(lane, done)
            return new_value(Transition, (_SUCCEEDED, done))
        return self._fail(lane, job, error or ERROR_OF_A_BARE_FAILURE, retry_after, now)

    def on_returned(self, *, job_id: str, attempt: int, now: float) -> Transition:
        """The admission came back unused (expired in the queue, rejected, or unpublishable)."""
        now = self._advance(now)
        taken = self._take_back(job_id, attempt)
        if isinstance(taken, Verdict):
            return Transition(verdict=taken)
        job, lane = taken
        lane.gate.on_returned(job.admitted_at, now)
        lane.settle_units(job, 0.0)  # never started (docs/protocol.md): it cost nothing
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
        leases = self._ledger.leases
        if not leases or leases[0][0] > now:
            return transitions  # the usual tick: no lease due
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
        # Each step below is called only if it has something to do (its own checks, made first
        # here): this loop runs at every tick, and most ticks of a lane have none of them.
        for lane in self._lanes.values():
            if lane.operator_pause is not None or lane.override is not None:
                ends = lane.steer_due(now)
                if ends is not None:
                    wakeups.append(ends)
            if lane.delayed or lane.rate_parked or lane.retry_parked:
                lane.release_due(now)
            ramp = lane.gate.ramp
            if budget != 0:
                budget = admit_lane(lane, now, budget, admissions, blocked, wakeups)
                if budget != 0 and ramp.started is not None:
                    lane.settle_ramp(now)
            if ramp.started is not None:
                ramp_ends = ramp.ends_at()
                if ramp_ends is not None and ramp_ends > now:
                    wakeups.append(ramp_ends)  # to lift it then, or see that it still binds
            if lane.retry_parked:
                free = lane.gate.retry_free_at(now)
                if free is not None:
                    wakeups.append(free)
            if lane.rate_parked:
                wakeups.append(lane.rate_parked[0][0])
            if lane.delayed:
                wakeups.append(lane.delayed[0][0])
            if lane.retiring:
                lane.retire_due(now)
        if budget == 0:
            wakeups.append(now)  # cut short by `limit`: more may be admissible at once
        if (lease_ends := self._ledger.next_deadline()) is not None:
            wakeups.append(lease_ends)
        return new_value(AdmitDecision, (admissions, blocked, min(wakeups) if wakeups else None))

    def drain_changes(self) -> Changes:
        """Jobs submitted and jobs changed since the last call, latest state each: what to write."""
        new_ids = self._new
        new = [job for job_id, job in self._changed.items() if job_id in new_ids]
        updated = [job for job_id, job in self._changed.items() if job_id not in new_ids]
        self._changed.clear()
        self._new_since_drain = new_ids
        self._new = {}
        return Changes(new=new, updated=updated)

    @property
    def clock(self) -> float:
        return self._clock_floor

    # -- internals ----------------------------------------------------------

    def _take_back(self, job_id: str, attempt: int) -> tuple[Job, Lane] | Verdict:
        """Free the slot of the job's current admission `attempt`; why not, if it is not current."""
        job = self._jobs.get(job_id)
        if job is None:
            return Verdict.UNKNOWN_JOB
        if job.state is not _ADMITTED or job.attempt != attempt:
            return Verdict.STALE_ATTEMPT
        lane = self._lanes[job.dependency]
        lane.held.discard(job_id)
        scope = lane.scopes[job.scope]
        scope.held -= 1
        if scope.parked is _SCOPE_CONCURRENCY:
            lane.unpark_if_below_cap(scope)
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
        done = succeeded(job, now)
        self._finish(lane, done)
        return Transition(verdict=Verdict.SUCCEEDED, job=done)

    def _store(self, job: Job) -> None:
        self._jobs[job.job_id] = job
        self._changed[job.job_id] = job

    def _finish(self, lane: Lane, job: Job) -> None:
        del self._jobs[job.job_id]
        if self._lapsed:
            self._lapsed.pop(job.job_id, None)
        self._changed[job.job_id] = job
        scope = lane.scopes[job.scope]
        if scope.parked is None and scope.empty:  # checked here first: the call is rarely needed
            lane.maybe_retire(scope)

    def _fail(self, lane: Lane, job: Job, error: str, retry_after: float | None, now: float) -> Transition:
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
        lane.delay(lane.scopes[job.scope], waiting)
        return Transition(verdict=Verdict.RETRY_SCHEDULED, job=waiting)
