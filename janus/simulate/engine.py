"""The virtual-clock driver: the production `Scheduler` against a workload, event by event.

A heap of timed events (arrivals, admissions reaching a worker, calls ending, results and unused
admissions reaching Janus, the core's own wakeups) is played in time order. Whenever something
reaches Janus, or the core asked to be woken, the driver makes the calls a tick of the service
makes (`janus/service/tick.py`), in its order and with `now` = the event's time: page in what
the core asked for from the (simulated) store, submit the new jobs, apply the results, take back
the unused admissions, expire leases, `admit`, drain the changes and the gates. Nothing is
stepped at a fixed interval, so idle time costs nothing; what is due at one instant is one heap
entry; and a success that reaches a dependency held by a rate window or a pause, or one with
no job waiting, is applied without the admission step, which could not admit anything then
(`janus/simulate/skipping.py`).

The workers are modelled as the SDK worker behaves: an admission reaches a worker pool after
`start_delay`, waits there for a free handler, is refused unstarted if it has expired (or is
dead-lettered by the broker when its TTL ends in the queue), and a handler that would outlive
its lease is cut `LEASE_SAFETY` before the lease ends and reports a failure.
"""

from __future__ import annotations

import gc
import heapq
import random
from collections import defaultdict, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from janus.client.worker import LEASE_SAFETY
from janus.core.decisions import PageRequest, Verdict
from janus.core.jobs import Admission, Job
from janus.core.policy import DependencyPolicy
from janus.core.scheduler import Scheduler
from janus.core.units import cost_refusal
from janus.service.tick import MAX_ADMISSIONS_PER_TICK
from janus.simulate.costs import actual, estimate
from janus.simulate.distributions import Distribution
from janus.simulate.logs import DependencyLog, Outcome, Row, ScopeLog
from janus.simulate.skipping import Result, SkipRule
from janus.simulate.time_at_limits import TimeAtLimits
from janus.simulate.workers import Pool
from janus.simulate.workload import WorkerModel, Workload

# Event kinds. At one instant every event is handled before the tick, so their order there
# matters only for the worker pools (a handler freed at t may take an admission delivered at t).
_ARRIVE, _FINISH, _RESULT, _RETURN, _DELIVER, _EXPIRE, _WAKE = range(7)
# Module globals read faster than enum members through their class: once per result.
_SUCCEEDED, _DEAD, _RETRY_SCHEDULED = Verdict.SUCCEEDED, Verdict.DEAD, Verdict.RETRY_SCHEDULED


# drain_changes hands the store what changed; nothing here reads it, so it is drained in
# large batches only to bound the memory of the core's change log. The gates' events carry
# their own times, so they are taken at the same pace.
_DRAIN_EVERY = 4096


class Simulation:
    def __init__(
        self,
        policies: Sequence[DependencyPolicy],
        workload: Workload,
        *,
        seed: int = 0,
        timeline: bool = False,
    ) -> None:
        self._policies = {policy.name: policy for policy in policies}
        self._workload = workload
        self._seed = seed
        self._scheduler = Scheduler(policies, random.Random(seed))
        self._arrivals_rng = random.Random(f"arrivals-{seed}")
        self._pools = {
            name: Pool(workload.workers.get(name, WorkerModel()), workload.services.get(name))
            for name in self._policies
        }
        self._logs = {name: DependencyLog() for name in self._policies}
        self._heap: list[tuple[float, int, int, object]] = []
        self._batches: dict[tuple[float, int], list[Any]] = {}  # (at, kind) -> its heap entry's items
        # The batch `_batch` found last, and its (at, kind): consecutive calls mostly ask for the
        # same one (a tick's admissions reach the workers together, equal calls end together).
        self._last_batch: list[Any] = []
        self._last_at, self._last_kind = float("nan"), -1
        self._serial = 0
        self._stored: dict[tuple[str, str], deque[Job]] = defaultdict(deque)  # first attempts paged out
        self._arrived_at: dict[str, float] = {}  # jobs not admitted yet
        self._open = 0  # jobs neither succeeded nor dead
        self._lapsed: set[str] = set()  # jobs whose lease ran out, waiting for their retry
        self._skip = SkipRule(policies)  # when a result needs no admission step (simulate/skipping.py)
        self._jobs = 0
        self._wake_at = float("inf")
        self._limits = TimeAtLimits(self._logs, policies)  # time held at each limit, for the report
        self._ticks = 0
        self._timeline: list[Row] | None = [] if timeline else None
        # Inputs gathered for the next tick, in the order the tick applies them.
        self._arrivals: list[tuple[float, str, str, str]] = []
        self._results: list[Result] = []
        # Beside _arrivals: each job's estimate, drawn from its stream's distribution or, for
        # a trace's row that gives one, as written.
        self._arrival_costs: list[Distribution | float | None] = []
        self._returned: list[Admission] = []

    # -- the run -----------------------------------------------------------------------

    def run(self) -> Outcome:
        # The run allocates values by the million and frees them by reference count: it makes no
        # reference cycles (tests/unit/test_simulate_gc.py checks it). Left on, the collector
        # would scan the ever larger set of live jobs again and again as a backlog grows, which
        # costs a burst a third of its time; young objects are still collected at every
        # periodic drain.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if collecting:
                gc.enable()

    def _run(self) -> Outcome:
        heap = self._heap
        for stream in self._workload.streams:
            self._next_arrival(stream.jobs(self._arrivals_rng), stream.cost, stream.trace_costs or None)
        horizon = self._workload.horizon
        events = 0
        now = 0.0
        pop = heapq.heappop
        arrivals, results, returned = self._arrivals, self._results, self._returned
        batches = self._batches
        while heap:
            now = heap[0][0]
            if horizon is not None and now > horizon:
                now = horizon
                break
            wake = False
            while heap and heap[0][0] == now:
                _, _, kind, data = pop(heap)
                events += 1
                if kind == _ARRIVE:
                    assert isinstance(data, _Arrivals)
                    self._arrive(now, data)
                    continue
                if kind == _WAKE:
                    if now >= self._wake_at:
                        self._wake_at = float("inf")
                    wake = True
                    continue
                del batches[(now, kind)]  # what is scheduled for `now` from here on is a new batch
                self._last_kind = -1
                if kind == _FINISH:
                    self._finish_all(now, data)  # type: ignore[arg-type]
                elif kind == _RESULT:
                    results.extend(data)  # type: ignore[arg-type]
                elif kind == _DELIVER:
                    for admission in data:  # type: ignore[attr-defined]
                        self._deliver(now, admission)
                elif kind == _RETURN:
                    returned.extend(data)  # type: ignore[arg-type]
                else:
                    for expired in data:  # type: ignore[attr-defined]
                        self._expire(now, expired)
            if wake or returned:
                self._tick(now)
            elif arrivals or results:
                if self._skips_admission(now):
                    if arrivals:  # each to a dependency held by a limit a new job cannot lift
                        self._limits.account(now)  # the backlogs change now: the time so far first
                        self._submit(now)
                    self._apply_results(now)
                    if self._limits.capped:  # a success frees a slot of its scope, maybe below its cap
                        self._limits.account(now)
                        self._limits.note_caps(self._scheduler)
                    if self._gates_moved():
                        self._tick(now)  # a success may open a circuit (the outcome that fills its window)
                else:
                    self._tick(now)
        self._drain()
        self._limits.account(now)
        return Outcome(
            policies=self._policies,
            dependencies=self._logs,
            end=now,
            unfinished=self._open,
            jobs=self._jobs,
            ticks=self._ticks,
            events=events,
            timeline=self._timeline,
        )

    def _push(self, at: float, kind: int, data: object) -> None:
        self._serial += 1
        heapq.heappush(self._heap, (at, self._serial, kind, data))

    def _later(self, at: float, kind: int, item: object) -> None:
        """Schedule `item` at `at`: everything of one kind due at one instant is one heap entry."""
        self._batch(at, kind).append(item)

    def _batch(self, at: float, kind: int) -> list[Any]:
        """The items of `kind` due at `at`, a heap entry made for them if it is the first."""
        if at == self._last_at and kind == self._last_kind:
            return self._last_batch
        batch = self._batches.get((at, kind))
        if batch is None:
            batch = self._batches[(at, kind)] = []
            self._serial += 1
            heapq.heappush(self._heap, (at, self._serial, kind, batch))
        self._last_batch, self._last_at, self._last_kind = batch, at, kind
        return batch

    def _next_arrival(
        self,
        jobs: Iterator[tuple[float, str, str, str]],
        cost: Distribution | None,
        each: Mapping[str, float] | None,
    ) -> None:
        head = next(jobs, None)
        if head is not None:
            self._push(head[0], _ARRIVE, _Arrivals(head, jobs, cost, each))

    def _arrive(self, now: float, arrivals: _Arrivals) -> None:
        """The stream's jobs that arrive at `now` (a burst is taken at once, not through the heap)."""
        head, cost, each = arrivals.head, arrivals.cost, arrivals.each
        self._arrivals.append(head)
        costs = self._arrival_costs
        costs.append(cost if each is None else each.get(head[1], cost))
        for job in arrivals.rest:
            if job[0] != now:
                arrivals.head = job  # popped from the heap: the same record goes back on it
                self._push(job[0], _ARRIVE, arrivals)
                return
            self._arrivals.append(job)
            costs.append(cost if each is None else each.get(job[1], cost))

    # -- a tick, as the service makes it -------------------------------------------------

    def _tick(self, now: float) -> None:
        scheduler, limits = self._scheduler, self._limits
        if limits.blocked or limits.capped:
            limits.account(now)
        else:
            limits.restart(now)  # held by nothing since the last look: no time to tell
        while True:
            self._ticks += 1
            requests = scheduler.page_requests()  # mostly none: then no call to read them
            paged = self._page_in(requests) if requests else 0
            if self._arrivals:
                self._submit(now)
            if self._results:
                self._apply_results(now)
            if self._returned:
                self._take_back(now)
            for transition in scheduler.expire_leases(now):
                if transition.job is not None:
                    self._skip.untracked.add(transition.job.dependency)
                    if transition.verdict is Verdict.RETRY_SCHEDULED:
                        self._lapsed.add(transition.job.job_id)  # its late success may still come
                self._finished(transition.verdict, transition.job, now)
            admissions, blocked, wakeup = scheduler.admit(now, limit=MAX_ADMISSIONS_PER_TICK)
            if self._ticks % _DRAIN_EVERY == 0:
                self._drain()
                gc.collect(1)  # the young objects, at this pace while automatic collection is off (`run`)
            limits.blocked = blocked
            if admissions:
                self._admitted(now, admissions)
            stalled = False
            if wakeup is None or wakeup > now:
                break
            # Cut short (a full tick, or a scope's page to read): the service ticks again at once.
            if not (admissions or paged):
                wakeup = None  # no progress at this instant: the next event will tick again
                stalled = True
                break
        self._skip.ticked(blocked, stalled)
        if limits.caps:
            limits.note_caps(scheduler)
        if wakeup is not None and wakeup < self._wake_at:
            self._wake_at = wakeup
            self._push(wakeup, _WAKE, None)

    def _skips_admission(self, now: float) -> bool:
        """May the arrivals and results gathered for `now` be taken without the admission step? (SkipRule)"""
        return self._skip.skips(self._results, now, self._arrivals)

    def _gates_moved(self) -> bool:
        """Did a gate change (a circuit open or close) since the last look? Its events are logged."""
        _, gate_events = self._scheduler.drain_gates()
        for event in gate_events:
            self._logs[event.dependency].gate_events.append((event.at, event.kind, event.detail))
        return bool(gate_events)

    def _drain(self) -> None:
        """Take what the core keeps for the store and the logs: its change log, and the gates' events."""
        self._scheduler.drain_changes()
        _, gate_events = self._scheduler.drain_gates()
        for event in gate_events:
            self._logs[event.dependency].gate_events.append((event.at, event.kind, event.detail))

    def _page_in(self, requests: list[PageRequest]) -> int:
        """Read the first attempts the core asked for from the simulated store; how many pages."""
        scheduler = self._scheduler
        for request in requests:
            stored = self._stored[(request.dependency, request.scope)]
            page = [stored.popleft() for _ in range(min(request.limit, len(stored)))]
            scheduler.load_page(request, page)
        return len(requests)

    def _submit(self, now: float) -> None:
        arrivals = self._arrivals
        if not arrivals:
            return
        scheduler, logs, arrived_at, timeline = self._scheduler, self._logs, self._arrived_at, self._timeline
        costs, seed = self._arrival_costs, self._seed
        submit, held, waiting = scheduler.submit, scheduler.job, self._skip.waiting
        submitted = 0
        for (_, job_id, dependency, scope), cost in zip(arrivals, costs, strict=True):
            if cost is None:
                estimated = 1.0
            elif isinstance(cost, float):
                estimated = cost  # a trace's own
            else:
                estimated = estimate(cost, seed, job_id)
            if cost is not None and self._refused(now, job_id, dependency, scope, estimated):
                continue
            job = submit(
                job_id=job_id, dependency=dependency, scope=scope, payload=None, now=now, cost=estimated
            )
            if held(job_id) is None:  # the core keeps only the head of a backlog
                self._stored[(dependency, scope)].append(job)
            arrived_at[job_id] = now
            waiting[dependency] += 1
            submitted += 1
            scopes = logs[dependency].scopes
            log = scopes.get(scope)
            if log is None:
                log = scopes[scope] = ScopeLog()
                self._skip.scopes += 1
            log.arrived.append(now)
            log.waiting += 1
            if timeline is not None:
                timeline.append((now, "arrived", job_id, dependency, scope, 0, ""))
        self._jobs += submitted
        self._open += submitted
        arrivals.clear()
        costs.clear()

    def _refused(self, now: float, job_id: str, dependency: str, scope: str, cost: float) -> bool:
        """A job whose cost can never be admitted is set aside at intake, as the service does."""
        reason = cost_refusal(self._policies[dependency], cost)
        if reason is None:
            return False
        self._logs[dependency].refused.append((job_id, scope, reason))
        if self._timeline is not None:
            self._timeline.append((now, "refused", job_id, dependency, scope, 0, reason))
        return True

    def _apply_results(self, now: float) -> None:
        results = self._results
        if not results:
            return
        on_result, finished = self._scheduler.on_result, self._finished
        for admission, failed, error, retry_after, cost, duration in results:
            transition = on_result(
                job_id=admission.job_id,
                attempt=admission.attempt,
                success=not failed,
                error=error,
                retry_after=retry_after,
                now=now,
                cost=cost,
                duration=duration,  # as the SDK reports it: it trims the rate windows
            )
            finished(transition.verdict, transition.job, now)
        results.clear()

    def _take_back(self, now: float) -> None:
        returned = self._returned
        if not returned:
            return
        on_returned = self._scheduler.on_returned
        for admission in returned:
            transition = on_returned(job_id=admission.job_id, attempt=admission.attempt, now=now)
            if transition.verdict is Verdict.RELEASED:
                self._skip.waiting[admission.dependency] += 1
                scope_log = self._logs[admission.dependency].scopes[admission.scope]
                scope_log.returned += 1
                scope_log.waiting += 1
                if self._timeline is not None:
                    self._timeline.append(
                        (
                            now,
                            "returned",
                            admission.job_id,
                            admission.dependency,
                            admission.scope,
                            admission.attempt,
                            "",
                        )
                    )
        returned.clear()

    def _finished(self, verdict: Verdict, job: Job | None, now: float) -> None:
        if job is None or (verdict is not _SUCCEEDED and verdict is not _DEAD):
            if job is not None and verdict is _RETRY_SCHEDULED:
                self._skip.retry_scheduled(job.dependency, job.eligible_at)
                self._logs[job.dependency].scopes[job.scope].waiting += 1
            return
        log = self._logs[job.dependency].scopes[job.scope]
        if self._lapsed and job.job_id in self._lapsed:  # a late success: its retry was waiting
            self._lapsed.discard(job.job_id)
            log.waiting -= 1
        log.finished.append(now)
        self._open -= 1
        if verdict is _SUCCEEDED:
            log.succeeded += 1
        else:
            log.dead += 1
            if self._timeline is not None:
                self._timeline.append(
                    (now, "dead", job.job_id, job.dependency, job.scope, job.attempt, job.last_error or "")
                )

    # -- the workers ---------------------------------------------------------------------

    def _admitted(self, now: float, admissions: list[Admission]) -> None:
        """A tick's admissions, in order: logged, then on their way to a worker. They come lane by
        lane, so what belongs to their dependency is looked up once per run of them."""
        waiting, logs, pools = self._skip.waiting, self._logs, self._pools
        lapsed, arrived_at, timeline = self._lapsed, self._arrived_at, self._timeline
        dependency = ""
        scopes: dict[str, ScopeLog] = {}
        delay = 0.0
        deliveries: list[Any] = []
        for admission in admissions:
            if admission.dependency != dependency:
                dependency = admission.dependency
                scopes = logs[dependency].scopes
                delay = pools[dependency].model.start_delay
                if delay > 0:
                    deliveries = self._batch(now + delay, _DELIVER)
            waiting[dependency] -= 1
            log = scopes[admission.scope]
            log.waiting -= 1
            if lapsed:
                lapsed.discard(admission.job_id)
            log.admitted.append(now)
            if admission.retry:
                log.retries += 1
            arrived = arrived_at.pop(admission.job_id, None)
            if arrived is not None:
                log.waits.append(now - arrived)
            if timeline is not None:
                timeline.append(
                    (now, "admitted", admission.job_id, dependency, admission.scope, admission.attempt, "")
                )
            if delay > 0:
                deliveries.append(admission)
            else:
                self._deliver(now, admission)

    def _deliver(self, now: float, admission: Admission) -> None:
        pool = self._pools[admission.dependency]
        queue, waiting = pool.queue, pool.waiting
        if queue:
            while queue and queue[0] not in waiting:
                queue.popleft()  # dead-lettered while waiting
        if not queue:
            slots = pool.model.slots  # pool.free(), inlined: once per admission
            if slots is None or pool.busy < slots:
                self._start(now, pool, admission)
                return
        key = (admission.job_id, admission.attempt)
        pool.queue.append(key)
        pool.waiting[key] = admission
        self._later(admission.expires_at, _EXPIRE, (admission.dependency, key))

    def _expire(self, now: float, data: tuple[str, tuple[str, int]]) -> None:
        """An admission still waiting for a handler at its expiry: the broker dead-letters it."""
        dependency, key = data
        admission = self._pools[dependency].waiting.pop(key, None)
        if admission is not None:
            self._return(now, admission)

    def _return(self, now: float, admission: Admission) -> None:
        delay = self._pools[admission.dependency].model.report_delay
        self._later(now + delay, _RETURN, admission)

    def _start(self, now: float, pool: Pool, admission: Admission) -> None:
        if now >= admission.expires_at:
            self._return(now, admission)  # too late to start: refused unstarted
            return
        service = pool.service
        dependency = admission.dependency
        log = self._logs[dependency]
        pool.busy += 1
        log.started.append(now)
        cost: float | None = None
        if service is None:
            duration, failed, error, retry_after = 0.0, False, None, None
        else:
            throttled = pool.capacity is not None and pool.throttles(now)
            answer = service.constant  # the one answer of every call, if so (ServiceModel.answer)
            if answer is None or throttled or service.outages:
                answer = service.answer(
                    self._seed, admission.job_id, admission.attempt, now, throttled=throttled
                )
            duration, failed, error, retry_after, refused = answer  # one unpacking: once per call
            if refused:  # throttled
                log.throttled += 1
            elif service.cost_factor is not None and not (service.outages and service.in_outage(now)):
                # Answered: the call reports what it cost (a refused one reports nothing).
                cost = actual(
                    service.cost_factor, admission.cost, self._seed, admission.job_id, admission.attempt
                )
                log.units_estimated += admission.cost
                log.units_actual += cost or 0.0
        end = now + duration
        cut = admission.lease_deadline - LEASE_SAFETY
        if end > cut:
            end, failed, error, retry_after, cost = (
                max(cut, now),
                True,
                "handler did not finish within the lease",
                None,
                None,
            )
            log.lease_cut += 1
        if failed:
            log.failed_calls += 1
        if self._timeline is not None:
            self._timeline.append(
                (now, "started", admission.job_id, dependency, admission.scope, admission.attempt, "")
            )
        self._later(end, _FINISH, (admission, failed, error, retry_after, cost, end - now))

    def _finish_all(self, now: float, calls: list[Result]) -> None:
        """The calls that end at `now`, in order: each frees its handler (which takes the next
        admission waiting, if any) and sends its result."""
        pools, timeline, results = self._pools, self._timeline, self._results
        for data in calls:
            admission = data[0]
            pool = pools[admission.dependency]
            pool.busy -= 1
            if timeline is not None:
                detail = f"failure: {data[2]}" if data[1] else "success"
                timeline.append(
                    (
                        now,
                        "finished",
                        admission.job_id,
                        admission.dependency,
                        admission.scope,
                        admission.attempt,
                        detail,
                    )
                )
            delay = pool.model.report_delay
            if delay > 0:
                self._later(now + delay, _RESULT, data)
            else:
                results.append(data)
            queue = pool.queue
            if queue:  # admissions waiting for a handler
                waiting = pool.waiting
                while queue and pool.free():
                    next_admission = waiting.pop(queue.popleft(), None)
                    if next_admission is not None:
                        self._start(now, pool, next_admission)


@dataclass(slots=True)
class _Arrivals:
    """The next arrival of a stream, and the rest of it."""

    head: tuple[float, str, str, str]
    rest: Iterator[tuple[float, str, str, str]]
    cost: Distribution | None  # the estimate the stream's jobs declare
    each: Mapping[str, float] | None  # a trace's costs, per job (where a row gives one)


def simulate(
    policies: Sequence[DependencyPolicy], workload: Workload, *, seed: int = 0, timeline: bool = False
) -> Outcome:
    return Simulation(policies, workload, seed=seed, timeline=timeline).run()
