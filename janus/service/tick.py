"""One admission tick as a function: a batch and the core in, a `TickResult` out.

Decode the batch (bad input is set aside, never raised), drive the core (revived jobs, new
jobs, results, returned admissions, lease time-outs, then admit), and write it all -- the new
jobs, every changed job, every admission -- in ONE statement fenced by the leader lease. The
store says which "new" jobs it already had (finished long ago: the core forgets finished
jobs); those are retracted before anything about them leaves the process.

Nothing here publishes, acks or counts: the admission loop does that after the commit, from
the returned value.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from janus.broker import topology
from janus.broker.consumer import Delivery, content_type
from janus.core.adaptive import AdaptiveState
from janus.core.decisions import AdmitDecision, Changes, Transition, Verdict
from janus.core.gates import GateEvent, GateState
from janus.core.jobs import Admission, Job
from janus.core.outbox import OutboxMessage
from janus.core.policy import DependencyPolicy
from janus.core.scheduler import Scheduler
from janus.core.units import cost_refusal
from janus.errors import ProtocolError
from janus.protocol import (
    ENVELOPE_BYTES,
    MAX_RESULT_BYTES,
    IntakeMessage,
    ResultMessage,
    decode_intake,
    decode_result,
    decode_returned,
    encode_outcome,
)
from janus.service.inbox import UNROUTABLE, Batch
from janus.service.maybe_sent import MaybeSent
from janus.service.unapplied import Unapplied
from janus.store.rows import FailedAttempt
from janus.store.session import LeaderSession, Settlement

log = logging.getLogger("janus.admission")

MAX_ADMISSIONS_PER_TICK = 2000


@dataclass(frozen=True, kw_only=True, slots=True)
class TickOptions:
    max_payload_bytes: int
    # Per dependency, the outcomes janus.outcomes carries (all of them if None).
    published_outcomes: Mapping[str, frozenset[str]] | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class SetAside:
    """A message to move to janus.rejected, with its reason, before it is acked."""

    message: Delivery
    source: str  # intake, results, returned
    reason: str
    detail: str


# What is kept of a message set aside over its cap: enough to tell what it was, not a copy of a
# flood's megabytes (the original size goes in a header).
TRUNCATED_BODY_BYTES = 4096


def set_aside_body(item: SetAside, max_payload_bytes: int) -> tuple[bytes, int | None]:
    """The body to copy to janus.rejected, and the original size if it is truncated: a message
    over the largest valid one of its source (intake and returned: the payload cap and its
    envelope; results: MAX_RESULT_BYTES) keeps its first TRUNCATED_BODY_BYTES."""
    body = item.message.body
    cap = MAX_RESULT_BYTES if item.source == "results" else max_payload_bytes + ENVELOPE_BYTES
    if len(body) <= cap:
        return body, None
    return body[:TRUNCATED_BODY_BYTES], len(body)


@dataclass(kw_only=True, slots=True)
class Decided:
    """What the core decided for one batch, before it is written."""

    batch: Batch
    now: float
    set_aside: list[SetAside]
    intake: int  # valid intake messages (new jobs and duplicates)
    payloads: dict[str, str | None]  # per new job, its payload as JSON text
    # Per new job, the intake deliveries that named it (the first one submitted it): if the
    # store already had the job for another dependency, they are set aside after all.
    submitted: dict[str, list[Delivery]]
    changes: Changes
    decision: AdmitDecision
    gates: list[GateState]
    gate_events: list[GateEvent]
    adaptive: list[AdaptiveState]  # adaptive limits changed in the tick, to persist
    # Results that changed nothing: set aside with the reason the store tells, before the commit.
    unapplied: Unapplied = field(default_factory=Unapplied)
    failed: list[FailedAttempt] = field(default_factory=list)  # the error history to write
    finished: list[Job] = field(default_factory=list)  # terminal now, with an outcome to publish
    events: Counter[tuple[str, str]] = field(default_factory=Counter)  # (source, verdict)
    # (dependency, verdict), for the events that changed a job
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    revived: Counter[str] = field(default_factory=Counter)  # per dependency
    settled: list[Settlement] = field(default_factory=list)  # actual costs results reported
    costs: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (dependency, estimated|actual)


@dataclass(frozen=True, kw_only=True, slots=True)
class TickResult:
    """A tick decided and committed: what is left to do (publish, set aside, ack) and to count."""

    batch: Batch
    set_aside: list[SetAside]
    admissions: list[Admission]
    finished: list[Job]
    outcomes: list[OutboxMessage]  # the finished jobs' outcome messages, committed to the outbox
    gate_events: list[GateEvent]
    events: Counter[tuple[str, str]]
    transitions: Counter[tuple[str, str]]
    revived: Counter[str]
    accepted: int  # new jobs stored
    duplicates: int  # intake messages of jobs the core or the store already had
    pages: int  # scopes paged in from the store
    next_wakeup: float | None  # when the core may admit more by the clock alone
    costs: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (dependency, estimated|actual)
    write_seconds: float | None = None  # the statement's round trip, commit included; None: nothing written


async def run_tick(
    batch: Batch,
    scheduler: Scheduler,
    session: LeaderSession,
    clock: Callable[[], float],
    options: TickOptions,
    maybe_sent: MaybeSent | None = None,
) -> TickResult:
    """Page in, decide, and commit one batch; raises what the store raises (nothing is then committed)."""
    pages = await page_in(scheduler, session)
    decided = decide(batch, scheduler, clock(), options, maybe_sent)
    changes, payloads = decided.changes, decided.payloads
    # Results that changed nothing are set aside with the reason the store tells (a repeat of an
    # applied result, a stale attempt...: core/repeats.py), so that a misbehaving worker shows.
    for delivery, reason, detail in await decided.unapplied.explain(session):
        decided.set_aside.append(SetAside(message=delivery, source="results", reason=reason, detail=detail))
    outcomes = [outbox_message(job) for job in decided.finished]
    written = await session.write_tick(
        decided.now,
        [(job, payloads[job.job_id]) for job in changes.new],
        changes.updated,
        decided.decision.admissions,
        failed=decided.failed,
        gates=decided.gates,
        outbox=outcomes,
        adaptive=decided.adaptive,
        settled=decided.settled,
    )
    stored = written.inserted
    # Committed. Only now may the broker learn of it -- except of repeats of finished jobs,
    # which the core could not tell from new ones: they are retracted unpublished.
    admissions = decided.decision.admissions
    intake = decided.intake
    if len(stored) < len(changes.new):
        repeats = {job.job_id: job.dependency for job in changes.new if job.job_id not in stored}
        for job_id in repeats:
            scheduler.retract(job_id)
        admissions = [a for a in admissions if a.job_id not in repeats]
        # Rare (a job id published again after its job finished): which dependency had it?
        for job_id, had in (await session.job_dependencies(list(repeats))).items():
            if had != repeats[job_id]:
                for delivery in decided.submitted[job_id]:
                    decided.set_aside.append(_of_other_dependency(delivery, job_id, repeats[job_id], had))
                    intake -= 1
    return TickResult(
        batch=batch,
        set_aside=decided.set_aside,
        admissions=admissions,
        finished=decided.finished,
        outcomes=outcomes,
        gate_events=decided.gate_events,
        events=decided.events,
        transitions=decided.transitions,
        revived=decided.revived,
        costs=decided.costs,
        accepted=len(stored),
        duplicates=intake - len(stored),
        pages=pages,
        next_wakeup=decided.decision.next_wakeup,
        write_seconds=written.seconds,
    )


def outbox_message(job: Job) -> OutboxMessage:
    """A finished job's outcome as the outbox keeps it until the broker confirms it."""
    return OutboxMessage(
        id=str(uuid.uuid4()),
        job_id=job.job_id,
        routing_key=topology.outcome_key(job.dependency, job.state.value),
        body=encode_outcome(job),
    )


async def page_in(scheduler: Scheduler, session: LeaderSession) -> int:
    """Read the first attempts the core asked for (every earlier tick is committed, so the store
    holds exactly the backlog the core counts); returns how many scopes were paged in."""
    requests = scheduler.page_requests()
    if not requests:
        return 0
    pages = await session.load_pages(requests)
    for request, page in zip(requests, pages, strict=True):
        if not scheduler.load_page(request, page):
            log.warning(
                "scope %r of %r had fewer waiting jobs in the store than counted; corrected",
                request.scope,
                request.dependency,
                extra={"dependency": request.dependency, "scope": request.scope},
            )
    return len(requests)


def decide(
    batch: Batch, scheduler: Scheduler, now: float, options: TickOptions, maybe_sent: MaybeSent | None = None
) -> Decided:
    """Decode the batch and apply it to the core at `now`, then admit: no I/O. `maybe_sent`:
    admissions an earlier term may never have published, returned unused once their lease ends."""
    set_aside: list[SetAside] = []
    intake = _decode_intake(batch, scheduler, options.max_payload_bytes, set_aside)
    results = _decode_results(batch, set_aside)
    returned = _decode_returned(batch, scheduler, set_aside)
    tally = _Tally(now=now, published_outcomes=options.published_outcomes, scheduler=scheduler)
    revived = _revive(batch, scheduler)  # before the intake: a re-publication of one is a duplicate
    payloads, submitted = _submit(intake, scheduler, now, set_aside)
    unapplied = Unapplied()
    for delivery, source, result in results:
        _apply_result(delivery, source, result, scheduler, now, tally, set_aside, unapplied)
    for job_id, attempt in returned:
        _return(scheduler, "returned", job_id, attempt, now, tally)
    for admission in batch.unpublished:
        _return(scheduler, "unpublished", admission.job_id, admission.attempt, now, tally)
    for job_id, attempt in maybe_sent.due(now) if maybe_sent is not None else ():
        # Before the leases expire at `now`: an expiry would charge a failed attempt.
        _return(scheduler, "unpublished", job_id, attempt, now, tally)
    for transition in scheduler.expire_leases(now):
        tally.count("lease_timeout", transition)
    decision = scheduler.admit(now, limit=MAX_ADMISSIONS_PER_TICK)
    changes = scheduler.drain_changes()
    gates, gate_events = scheduler.drain_gates()
    adaptive = scheduler.drain_adaptive()
    return Decided(
        batch=batch,
        now=now,
        set_aside=set_aside,
        intake=len(intake) - sum(1 for item in set_aside if item.reason == DUPLICATE_OF_OTHER_DEPENDENCY),
        payloads=payloads,
        submitted=submitted,
        changes=changes,
        decision=decision,
        gates=gates,
        gate_events=gate_events,
        adaptive=adaptive,
        unapplied=unapplied,
        failed=tally.failed,
        finished=tally.finished,
        events=tally.events,
        transitions=tally.transitions,
        revived=revived,
        settled=tally.settled,
        costs=tally.costs,
    )


@dataclass(kw_only=True, slots=True)
class _Tally:
    """What the core's transitions in one tick add up to."""

    now: float
    published_outcomes: Mapping[str, frozenset[str]] | None
    events: Counter[tuple[str, str]] = field(default_factory=Counter)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    finished: list[Job] = field(default_factory=list)
    failed: list[FailedAttempt] = field(default_factory=list)
    scheduler: Scheduler
    settled: list[Settlement] = field(default_factory=list)
    costs: defaultdict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    _unit_limited: frozenset[str] | None = None  # read once, at the tick's first returned admission

    def unit_limited(self, dependency: str) -> bool:
        if self._unit_limited is None:
            policies = self.scheduler.policies
            self._unit_limited = frozenset(name for name, policy in policies.items() if policy.unit_limits)
        return dependency in self._unit_limited

    def settle(self, job: Job, actual: float) -> None:
        """A result's actual cost for the admission `job` held: written in place of its estimate."""
        if job.admitted_at is None:
            return
        self._settle(job, job.admitted_at, actual, reported=True)
        self.costs[job.dependency, "estimated"] += job.cost
        self.costs[job.dependency, "actual"] += actual

    def release(self, job: Job) -> None:
        """An admission that came back unused: it cost nothing, and its units are written as 0 (a
        new leader's unit windows must not hold its estimate). Not a reported cost: no metric."""
        if job.admitted_at is not None:
            self._settle(job, job.admitted_at, 0.0, reported=False)

    def _settle(self, job: Job, admitted_at: float, cost: float, *, reported: bool) -> None:
        self.settled.append(
            Settlement(
                job_id=job.job_id,
                attempt=job.attempt,
                dependency=job.dependency,
                admitted_at=admitted_at,
                cost=cost,
                reported=reported,
            )
        )

    def count(self, source: str, transition: Transition) -> None:
        self.events[source, transition.verdict.value] += 1
        job = transition.job
        if job is None:
            return
        self.transitions[job.dependency, transition.verdict.value] += 1
        if transition.verdict in (Verdict.SUCCEEDED, Verdict.DEAD) and self._publishes(job):
            self.finished.append(job)
        if transition.verdict in (Verdict.RETRY_SCHEDULED, Verdict.DEAD) and job.last_error is not None:
            self.failed.append(
                FailedAttempt(
                    job_id=job.job_id, attempt=job.attempt, failed_at=self.now, error=job.last_error
                )
            )

    def _publishes(self, job: Job) -> bool:
        """Is the outcome of this finished job one its dependency's `outcomes` key lists?"""
        wanted = self.published_outcomes
        return wanted is None or job.state.value in wanted.get(job.dependency, ())


def _return(scheduler: Scheduler, source: str, job_id: str, attempt: int, now: float, tally: _Tally) -> None:
    """An admission back unused: the core settles its units at 0 (core/units.py); so does the store,
    for a dependency with unit limits, in the same transaction."""
    held = scheduler.job(job_id)
    transition = scheduler.on_returned(job_id=job_id, attempt=attempt, now=now)
    tally.count(source, transition)
    if transition.verdict is Verdict.RELEASED and held is not None and tally.unit_limited(held.dependency):
        tally.release(held)


def _revive(batch: Batch, scheduler: Scheduler) -> Counter[str]:
    """Dead jobs `janus jobs retry` made waiting again: the core holds them from now on."""
    revived: Counter[str] = Counter()
    for job in batch.revived:
        if scheduler.job(job.job_id) is None and scheduler.restore(job):
            revived[job.dependency] += 1
    return revived


def _submit(
    intake: list[tuple[Delivery, IntakeMessage, str | None]],
    scheduler: Scheduler,
    now: float,
    set_aside: list[SetAside],
) -> tuple[dict[str, str | None], dict[str, list[Delivery]]]:
    """Submit the new jobs; a repeat of a job in this batch or still unfinished: the first one wins.
    Job ids are global: a repeat for another dependency is set aside, not a duplicate.
    Returns each submitted job's payload as JSON text, and the deliveries that named it."""
    payloads: dict[str, str | None] = {}
    submitted: dict[str, list[Delivery]] = {}
    dependencies: dict[str, str] = {}
    for delivery, message, payload_text in intake:
        job_id = message.job_id
        held = scheduler.job(job_id)
        had = held.dependency if held is not None else dependencies.get(job_id)
        if had is not None:
            if had != message.dependency:
                set_aside.append(_of_other_dependency(delivery, job_id, message.dependency, had))
            elif job_id in submitted:
                submitted[job_id].append(delivery)
            continue
        scheduler.submit(
            job_id=job_id,
            dependency=message.dependency,
            scope=message.scope,
            payload=message.payload,
            now=now,
            cost=message.cost,
        )
        payloads[job_id] = payload_text
        submitted[job_id] = [delivery]
        dependencies[job_id] = message.dependency
    return payloads, submitted


DUPLICATE_OF_OTHER_DEPENDENCY = "duplicate_of_other_dependency"
COST_TOO_LARGE = "cost_too_large"
# Verdicts of a result applied to the job's current admission: its actual cost is settled.
SETTLED = frozenset({Verdict.SUCCEEDED, Verdict.RETRY_SCHEDULED, Verdict.DEAD})


def _of_other_dependency(delivery: Delivery, job_id: str, dependency: str, had: str) -> SetAside:
    """An intake message for `dependency` reusing the id of a job of `had`: never a new job (ids
    are global), and not a harmless repeat either (docs/protocol.md, "Job ids")."""
    detail = f"job {job_id!r} is a job of {had!r}; published again for {dependency!r}"
    return SetAside(message=delivery, source="intake", reason=DUPLICATE_OF_OTHER_DEPENDENCY, detail=detail)


def _apply_result(
    delivery: Delivery,
    source: str,
    result: ResultMessage,
    scheduler: Scheduler,
    now: float,
    tally: _Tally,
    set_aside: list[SetAside],
    unapplied: Unapplied,
) -> None:
    held = scheduler.job(result.job_id)
    if held is not None and held.dependency != source:
        # Came through another dependency's results queue, so published by a worker of
        # that one: it cannot speak for this job (docs/security.md).
        detail = f"job {result.job_id!r} of {held.dependency!r} reported as {source!r}"
        set_aside.append(
            SetAside(message=delivery, source="results", reason="wrong_dependency", detail=detail)
        )
        return
    transition = scheduler.on_result(
        job_id=result.job_id,
        attempt=result.attempt,
        success=result.outcome == "success",
        error=result.error,
        retry_after=result.retry_after,
        now=now,
        throttled=result.throttled,
        duration=result.duration,
        cost=result.cost,
    )
    tally.count("result", transition)
    if result.cost is not None and held is not None and transition.verdict in SETTLED:
        tally.settle(held, result.cost)
    unapplied.note(delivery, source, result, transition.verdict)


# -- decoding -------------------------------------------------------------------


def _decode_intake(
    batch: Batch, scheduler: Scheduler, max_payload: int, set_aside: list[SetAside]
) -> list[tuple[Delivery, IntakeMessage, str | None]]:
    """The valid intake messages, each with its delivery and its payload as JSON text."""
    decoded = []
    policies: Mapping[str, DependencyPolicy] = {}  # read once per batch, when a cost needs them
    for message in batch.intake:
        try:
            intake, payload_text = decode_intake(
                message.body, content_type(message), max_payload, routing_key=message.routing_key
            )
            if not scheduler.knows(intake.dependency):
                raise ProtocolError(
                    "unknown_dependency", f"dependency {intake.dependency!r} is not configured"
                )
            if intake.cost != 1.0 or policies:  # every cost checked once a batch has one to check
                policies = policies or scheduler.policies
                refusal = cost_refusal(policies[intake.dependency], intake.cost)
                if refusal is not None:
                    raise ProtocolError(COST_TOO_LARGE, refusal)
        except ProtocolError as exc:
            set_aside.append(SetAside(message=message, source="intake", reason=exc.reason, detail=exc.detail))
            continue
        except Exception as exc:  # a decoder bug must not turn a message into a poison one
            log.exception("intake message could not be decoded")
            set_aside.append(
                SetAside(message=message, source="intake", reason="undecodable", detail=repr(exc))
            )
            continue
        decoded.append((message, intake, payload_text))
    return decoded


def _decode_results(batch: Batch, set_aside: list[SetAside]) -> list[tuple[Delivery, str, ResultMessage]]:
    """The valid results, each with the dependency whose queue it came through."""
    results = []
    for source, deliveries in batch.results.items():
        if source is UNROUTABLE:
            # No dependency's queue took it: no worker user may have sent it for any job.
            for message in deliveries:
                detail = f"routing key {message.routing_key!r} names no configured dependency"
                set_aside.append(
                    SetAside(message=message, source="results", reason="unroutable", detail=detail)
                )
            continue
        for message in deliveries:
            if message.routing_key != source:
                # Routed here by a CC or BCC header: brokers before RabbitMQ 4.0.3 check only the
                # routing key against the worker user's topic permissions, and the delivery keeps
                # that key. Whatever the headers say, only that key vouches (docs/security.md).
                detail = f"routing key {message.routing_key!r} in the results queue of {source!r}"
                set_aside.append(
                    SetAside(message=message, source="results", reason="wrong_routing_key", detail=detail)
                )
                continue
            try:
                results.append((message, source, decode_result(message.body, content_type(message))))
            except ProtocolError as exc:
                set_aside.append(
                    SetAside(message=message, source="results", reason=exc.reason, detail=exc.detail)
                )
            except Exception as exc:  # a decoder bug must not turn a message into a poison one
                log.exception("result message could not be decoded")
                set_aside.append(
                    SetAside(message=message, source="results", reason="undecodable", detail=repr(exc))
                )
    return results


def _decode_returned(batch: Batch, scheduler: Scheduler, set_aside: list[SetAside]) -> list[tuple[str, int]]:
    """Dead-lettered ready messages: (job_id, attempt) of admissions that came back unused.

    Dead-lettering keeps the routing key Janus published the admission with (its dependency):
    one that names another dependency than the job's was not Janus's admission of that job."""
    returned = []
    for message in batch.returned:
        try:
            job_id, attempt = decode_returned(message.body)
        except ProtocolError as exc:
            set_aside.append(
                SetAside(message=message, source="returned", reason=exc.reason, detail=exc.detail)
            )
            continue
        held = scheduler.job(job_id)
        if held is not None and held.dependency != message.routing_key:
            detail = (
                f"job {job_id!r} of {held.dependency!r} came back with routing key {message.routing_key!r}"
            )
            set_aside.append(
                SetAside(message=message, source="returned", reason="wrong_routing_key", detail=detail)
            )
            continue
        returned.append((job_id, attempt))
    return returned


def deliveries(batch: Batch) -> Iterator[tuple[str, Delivery]]:
    """Every delivery of the batch with its source, intake first."""
    for delivery in batch.intake:
        yield "intake", delivery
    for results in batch.results.values():
        for delivery in results:
            yield "results", delivery
    for delivery in batch.returned:
        yield "returned", delivery
