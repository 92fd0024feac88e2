"""One admission tick: take the inbox, decide in the core, commit once, ack, publish.

The order is what makes Janus durable:
  1. decode the batch (bad input is set aside, never raised);
  2. submit the new jobs and apply results, returned admissions and lease
     time-outs to the core, admit, then write it all -- the new jobs, every changed
     job, every admission -- in ONE statement fenced by the leader lease; the store
     tells which "new" jobs it already had (finished), and those are retracted;
  3. only after the commit: publish the admissions, set aside the bad input, and
     ack the batch, all in the background (the next tick need not wait): a bad
     message is acked only once its copy on janus.rejected is confirmed, and each
     channel's multiple-acks go out in order (a refused admission feeds back into
     the next tick).
If anything fails between the core's decision and the commit, the core is ahead
of the database. A lost connection or lease propagates (the term ends, the core is
rebuilt from PostgreSQL). Any other failure may be tied to one message (PostgreSQL
refused what it carried; a bug its content triggers): the core is rebuilt from
PostgreSQL in place and the batch retried one message at a time, each up to
MAX_MESSAGE_FAILURES times, after which that message alone is set aside. So no message
can block the intake forever, and the good messages around it go through.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiormq.abc import AbstractChannel as RawChannel
from prometheus_client import Gauge

from janus.api.metrics import Metrics
from janus.broker import topology
from janus.broker.consumer import Delivery, ack_one, ack_up_to, content_type
from janus.broker.publisher import Publisher
from janus.core.flood import BadInputLimit
from janus.core.gates import GateEvent
from janus.core.jobs import Admission, Job
from janus.core.policy import RateLimit
from janus.core.scheduler import Scheduler, Transition, Verdict
from janus.errors import JanusError, LeadershipLost, ProtocolError, StatementRefused
from janus.protocol import IntakeMessage, ResultMessage, decode_intake, decode_result
from janus.service.inbox import UNROUTABLE, Batch, Inbox, ResultSource
from janus.service.leadership import Term
from janus.service.unapplied import Unapplied
from janus.store.repository import FailedAttempt, LeaderSession

log = logging.getLogger("janus.admission")

MAX_ADMISSIONS_PER_TICK = 2000
BUSY_BATCH = 4  # a tick with this many messages means the next one should wait to grow
FULL_BATCH = 256  # ...unless this many are already waiting
LINGER = 0.005  # seconds
CIRCUIT_LEVELS = {"closed": 0, "half_open": 1, "open": 2}  # janus_circuit_state
TOP_SCOPES = 10  # per dependency, in the per-scope metrics
SCOPE_METRICS_EVERY = 1.0  # seconds, at the least
# The per-scope gauges scan every scope (O(scopes): about 0.1 s at 10,000 scopes, measured
# with benchmarks/backlog_memory.py): the scan waits this many times its own last duration,
# so it never takes more than 1/50 of the leader's time, however many scopes there are.
SCOPE_METRICS_SHARE = 50
MAX_MESSAGE_FAILURES = 3  # tries of one message alone before it is set aside
# A flood of results (bad ones included) is taken in slices: each tick, and so the wait of
# every dependency's admissions, stays short, and a flooded results queue gets no more of a
# tick than any other (benchmarks/flood.py).
RESULTS_PER_QUEUE_PER_TICK = 128
MAX_RESULTS_PER_TICK = 512


@dataclass(frozen=True, kw_only=True, slots=True)
class _SetAside:
    message: Delivery
    source: str
    reason: str
    detail: str


@dataclass(frozen=True, kw_only=True, slots=True)
class _Committed:
    """A tick decided and committed: what is left to do (set aside, ack, publish)."""

    batch: Batch
    set_aside: list[_SetAside]
    admissions: list[Admission]
    finished: list[Job]  # terminal now, with an outcome the dependency publishes to janus.outcomes
    gate_events: list[GateEvent]


def _flat(results: dict[ResultSource, list[Delivery]]) -> Iterator[Delivery]:
    for deliveries in results.values():
        yield from deliveries


def tied_to_input(error: Exception) -> bool:
    """Could this failure of a tick be caused by a message in it (rather than by a lost
    connection or lease, which retrying message by message cannot mend)?"""
    if isinstance(error, StatementRefused):
        return True
    return not isinstance(error, JanusError | OSError)


class _ThrottledLog:
    """Log bad input once per reason per interval, so a flood of garbage cannot flood the logs."""

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, message: str, count: int = 1) -> None:
        """`count` messages like this one: the first may be logged, the rest are counted."""
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) >= self._interval:
            extra = self._suppressed.pop(key, 0)
            suffix = f" ({extra} more like it since last logged)" if extra else ""
            log.warning("%s%s", message, suffix)
            self._last[key] = now
            count -= 1
        if count:
            self._suppressed[key] = self._suppressed.get(key, 0) + count


class AdmissionLoop:
    def __init__(
        self,
        *,
        scheduler: Scheduler,
        session: LeaderSession,
        publisher: Publisher,
        inbox: Inbox,
        term: Term,
        metrics: Metrics,
        max_payload_bytes: int,
        clock: Callable[[], float],
        publishing: asyncio.TaskGroup,
        rebuild: Callable[[], Awaitable[Scheduler]],
        published_outcomes: Mapping[str, frozenset[str]] | None = None,
        bad_results_limit: RateLimit | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._session = session
        self._publisher = publisher
        self._inbox = inbox
        self._term = term
        self._metrics = metrics
        self._max_payload = max_payload_bytes
        self._clock = clock
        self._publishing = publishing
        self._rebuild = rebuild
        # Per dependency, the outcomes janus.outcomes carries (all of them if not given).
        self._published_outcomes = published_outcomes
        # Per results queue, the bad results it may have set aside per window (None: no limit).
        self._bad_results_limit = bad_results_limit
        self._bad_results: dict[ResultSource, BadInputLimit] = {}
        self._serve_again: dict[ResultSource, float] = {}  # a held queue: when its limit lets it go
        self._limit_timers: dict[ResultSource, asyncio.TimerHandle] = {}  # queues held by the limit alone
        self._stopping = False
        # A new term starts with one tick: restored jobs may be eligible with no delivery to wake us.
        self._next_wakeup: float | None = float("-inf")
        self._throttled = _ThrottledLog()
        self._in_flight: set[asyncio.Task[None]] = set()
        # Per consuming channel, the task that acks its last batch: the next waits for it, so a
        # multiple-ack never covers a bad message whose copy on janus.rejected is unconfirmed.
        self._acking: dict[RawChannel, asyncio.Task[None]] = {}
        self._last_batch = 0
        # Per tick: finished jobs (their outcomes are published after the commit) and failed attempts.
        self._finished: list[Job] = []
        self._failed: list[FailedAttempt] = []
        self._events: Counter[tuple[str, str]] = Counter()  # (source, verdict) of this tick
        self._gauges: dict[tuple[Gauge, tuple[str, ...]], Gauge] = {}
        self._now = 0.0
        self._shown_scopes: dict[str, set[str]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop`; then one last tick for what was already delivered."""
        # In the term's task group: if it fails, the term ends rather than limp on unobserved.
        observing = self._publishing.create_task(self._observe_scopes_forever(), name="scope-metrics")
        try:
            while not stop.is_set():
                await self._wait(stop)
                await self.tick()
            await self.tick()
            # What was delivered is finished without the bad-results limit: the rest of a flood
            # stays in the broker for the next leader, and stopping must not take a window per slice.
            self._stopping = True
            self._lift_limit_holds()
            while self._inbox.results_waiting():  # results are taken in slices: finish what was delivered
                await self._inbox.ready.wait()  # (a queue may be held until its bad results are set aside)
                await self.tick()
            await self.drain_publishing()
        finally:
            observing.cancel()
            self._lift_limit_holds()

    async def _wait(self, stop: asyncio.Event) -> None:
        if self._inbox.ready.is_set():
            if (
                self._last_batch >= BUSY_BATCH
                and self._inbox.servable(RESULTS_PER_QUEUE_PER_TICK) < FULL_BATCH
            ):
                # Under load, a moment's wait makes the next statement bigger: PostgreSQL's cost
                # is mostly per statement (benchmarks/tick_statement.py: a job costs it ten times
                # less in a batch of fifty than alone), and CPU is what the pipeline runs short of.
                # Counted as the next tick can take them: a flood waiting in a held queue (or
                # beyond a slice) would otherwise stop the lingering, and every other
                # dependency's ticks would shrink (benchmarks/flood.py).
                await asyncio.sleep(LINGER)
            return
        timeout = None
        if self._next_wakeup is not None:
            timeout = max(self._next_wakeup - self._clock(), 0.0)
            if timeout == 0.0:
                return
        waiters = [asyncio.ensure_future(self._inbox.ready.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    @property
    def scheduler(self) -> Scheduler:
        """The core in use (replaced by a rebuild after a failed tick)."""
        return self._scheduler

    async def drain_publishing(self) -> None:
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def tick(self) -> None:
        started = time.perf_counter()
        batch = self._inbox.take(per_queue=RESULTS_PER_QUEUE_PER_TICK, total=MAX_RESULTS_PER_TICK)
        self._last_batch = len(batch)
        if not self._term.may_act():
            raise LeadershipLost("the lease may have expired: not acting")
        try:
            committed = await self._decide_and_commit(batch)
        except Exception as exc:
            if not tied_to_input(exc) or not (batch.intake or batch.results or batch.returned):
                raise  # no message to pin it on: a bug, which must stop the process, not loop
            await self._isolate(batch, exc)
        else:
            await self._after_commit(committed, one_by_one=False)
        self._observe(batch, started)

    async def _decide_and_commit(self, batch: Batch) -> _Committed:
        await self._page_in()
        now = self._clock()
        set_aside: list[_SetAside] = []
        intake = self._decode_intake(batch, set_aside)
        results = self._decode_results(batch, set_aside)
        returned = self._decode_returned(batch, set_aside)
        scheduler = self._scheduler
        self._finished, self._failed, self._now = [], [], now
        # Counted once committed: a tick that fails is retried message by message.
        self._events = Counter()
        revived: Counter[str] = Counter()
        for job in batch.revived:
            # Before the intake: a re-publication of a revived job in this batch is then a duplicate.
            if scheduler.job(job.job_id) is None and scheduler.restore(job):
                revived[job.dependency] += 1

        payloads: dict[str, str | None] = {}
        for message, payload_text in intake:
            if message.job_id in payloads or scheduler.job(message.job_id) is not None:
                continue  # a repeat of a job in this batch or still unfinished: the first one wins
            scheduler.submit(
                job_id=message.job_id,
                dependency=message.dependency,
                scope=message.scope,
                payload=message.payload,
                now=now,
            )
            payloads[message.job_id] = payload_text
        # Results that change nothing are set aside with the reason the store tells (a repeat of
        # an applied result, a stale attempt...: core/repeats.py), so that a misbehaving worker shows.
        unapplied = Unapplied()
        for delivery, source, result in results:
            held = scheduler.job(result.job_id)
            if held is not None and held.dependency != source:
                # Came through another dependency's results queue, so published by a worker of
                # that one: it cannot speak for this job (docs/security.md).
                set_aside.append(
                    _SetAside(
                        message=delivery,
                        source="results",
                        reason="wrong_dependency",
                        detail=f"job {result.job_id!r} of {held.dependency!r} reported as {source!r}",
                    )
                )
                continue
            transition = scheduler.on_result(
                job_id=result.job_id,
                attempt=result.attempt,
                success=result.outcome == "success",
                error=result.error,
                retry_after=result.retry_after,
                now=now,
            )
            self._count("result", transition)
            unapplied.note(delivery, source, result, transition.verdict)
        for job_id, attempt in returned:
            self._count("returned", scheduler.on_returned(job_id=job_id, attempt=attempt, now=now))
        for admission in batch.unpublished:
            transition = scheduler.on_returned(job_id=admission.job_id, attempt=admission.attempt, now=now)
            self._count("unpublished", transition)
        for transition in scheduler.expire_leases(now):
            self._count("lease_timeout", transition)
        decision = scheduler.admit(now, limit=MAX_ADMISSIONS_PER_TICK)
        changes = scheduler.drain_changes()
        gates, gate_events = scheduler.drain_gates()
        for delivery, reason, detail in await unapplied.explain(self._session):
            set_aside.append(_SetAside(message=delivery, source="results", reason=reason, detail=detail))
        stored = await self._session.tick(
            now,
            [(job, payloads[job.job_id]) for job in changes.new],
            changes.updated,
            decision.admissions,
            failed=self._failed,
            gates=gates,
        )
        # Committed. Only now may the broker learn of it -- except of repeats of finished jobs,
        # which the core could not tell from new ones: they are retracted unpublished.
        admissions = decision.admissions
        if len(stored) < len(changes.new):
            repeats = {job.job_id for job in changes.new} - stored
            for job_id in repeats:
                scheduler.retract(job_id)
            admissions = [a for a in admissions if a.job_id not in repeats]
        for dependency, count in revived.items():
            self._metrics.revived.labels(dependency).inc(count)
        for (source, verdict), count in self._events.items():
            self._metrics.events.labels(source, verdict).inc(count)
        self._metrics.intake_messages.labels("accepted").inc(len(stored))
        self._metrics.intake_messages.labels("duplicate").inc(len(intake) - len(stored))
        self._next_wakeup = decision.next_wakeup
        return _Committed(
            batch=batch,
            set_aside=set_aside,
            admissions=admissions,
            finished=self._finished,
            gate_events=gate_events,
        )

    async def _after_commit(self, committed: _Committed, *, one_by_one: bool) -> None:
        self._report_gates(committed.gate_events)
        # Admissions (and outcomes) first: they need not wait for bad input to be set aside.
        if committed.admissions or committed.finished:
            self._background(self._publish(committed.admissions, committed.finished))
        batch = committed.batch
        if one_by_one:
            # Messages of a batch being isolated are acked singly: a multiple-ack would also
            # ack the earlier ones still to be retried. (Rare: awaited, simply.)
            if committed.set_aside:
                await self._set_aside(committed.set_aside)
            for delivery in (*batch.intake, *_flat(batch.results), *batch.returned):
                await ack_one(delivery)
            return
        bad: dict[RawChannel, list[_SetAside]] = {}
        for item in committed.set_aside:
            bad.setdefault(item.message.channel, []).append(item)
        # Each list holds the oldest unacked deliveries of its channel, in order (one channel per
        # queue): one multiple-ack of the last covers the lot, once its bad ones are set aside.
        for deliveries in (batch.intake, batch.returned):
            if deliveries:
                self._settle_in_order(deliveries[-1], bad)
        for source, deliveries in batch.results.items():
            bad_count = len(bad.get(deliveries[-1].channel, ()))
            if self._settle_in_order(deliveries[-1], bad):
                # Held until set aside: its next slice gathers meanwhile (Inbox.hold); and, if
                # its bad results went over the limit, until the limit lets it go.
                self._inbox.hold(source)
                self._serve_again[source] = self._charge_bad_results(source, bad_count)
                self._acking[deliveries[-1].channel].add_done_callback(partial(self._release, source))

    def _charge_bad_results(self, source: ResultSource, count: int) -> float:
        """When this results queue may be served again, now that `count` more of its results were
        bad: a time of the event loop's monotonic clock (a wall clock set back would hold the queue
        for as long), now or earlier if within the limit."""
        if self._bad_results_limit is None:
            return float("-inf")
        limit = self._bad_results.get(source)
        if limit is None:
            limit = self._bad_results[source] = BadInputLimit(self._bad_results_limit)
        now = asyncio.get_running_loop().time()
        serve_again = limit.charge(count, now)
        if serve_again > now:
            queue = topology.UNROUTABLE_QUEUE if source is UNROUTABLE else topology.results_queue(source)
            self._metrics.bad_results_held.labels(queue).inc()
            self._throttled.warn(
                f"held:{queue}",
                f"{queue} is held for {serve_again - now:.2f} s: more than {self._bad_results_limit} of "
                "its results were bad; the rest wait in the broker",
            )
        return serve_again

    def _release(self, source: ResultSource, _: asyncio.Task[None]) -> None:
        """Its bad results are set aside: serve the queue again, once its limit allows."""
        loop = asyncio.get_running_loop()
        serve_again = self._serve_again.pop(source, float("-inf"))
        if serve_again > loop.time() and not self._stopping:
            self._limit_timers[source] = loop.call_at(serve_again, self._release_after_limit, source)
        else:
            self._inbox.release(source)

    def _release_after_limit(self, source: ResultSource) -> None:
        del self._limit_timers[source]
        self._inbox.release(source)

    def _lift_limit_holds(self) -> None:
        for source, timer in self._limit_timers.items():
            timer.cancel()
            self._inbox.release(source)
        self._limit_timers.clear()

    def _settle_in_order(self, last: Delivery, bad: dict[RawChannel, list[_SetAside]]) -> bool:
        """Set aside and ack a channel's part of the batch, after its previous part; whether it
        had bad messages."""
        channel = last.channel
        set_aside = bad.pop(channel, [])
        self._acking[channel] = self._background(self._settle(set_aside, last, self._acking.get(channel)))
        return bool(set_aside)

    def _background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Under the term's task group: a failure (a lost broker) ends the term."""
        task = self._publishing.create_task(work)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return task

    async def _settle(
        self, bad: list[_SetAside], last: Delivery, previous: asyncio.Task[None] | None
    ) -> None:
        """Set aside a channel's bad deliveries of one batch, then ack the batch (nothing is lost:
        a bad message is acked only after its copy is confirmed), after the channel's previous ack."""
        if bad:
            await self._set_aside(bad)
        if previous is not None:
            await previous
        await ack_up_to(last)

    # -- a tick that failed ---------------------------------------------------

    async def _isolate(self, batch: Batch, error: Exception) -> None:
        """Retry a failed batch message by message; set aside each that fails alone, again and again."""
        self._metrics.tick_failures.inc()
        log.warning(
            "a tick of %d messages failed (%s); the core is rebuilt from PostgreSQL and the messages "
            "are retried one by one",
            len(batch),
            error,
            exc_info=not isinstance(error, StatementRefused),
        )
        await self._rebuild_core()
        # First without any message: if that fails too, the messages are not the cause (a bug):
        # the error stops the process rather than setting good messages aside one by one.
        # Jobs revived by hand carry no message to blame: they go with this empty part.
        nothing = Batch(intake=[], results={}, returned=[], unpublished=[], revived=batch.revived)
        try:
            await self._after_commit(await self._decide_and_commit(nothing), one_by_one=True)
        except Exception as exc:
            raise error from exc
        parts = [Batch(intake=[d], results={}, returned=[], unpublished=[]) for d in batch.intake]
        parts += [
            Batch(intake=[], results={source: [d]}, returned=[], unpublished=[])
            for source, deliveries in batch.results.items()
            for d in deliveries
        ]
        parts += [Batch(intake=[], results={}, returned=[d], unpublished=[]) for d in batch.returned]
        if batch.unpublished:
            parts.append(Batch(intake=[], results={}, returned=[], unpublished=batch.unpublished))
        for part in parts:
            await self._alone(part, error)

    async def _alone(self, part: Batch, error: Exception) -> None:
        for _ in range(MAX_MESSAGE_FAILURES):
            try:
                committed = await self._decide_and_commit(part)
            except Exception as exc:
                if not tied_to_input(exc) or not (part.intake or part.results or part.returned):
                    raise
                error = exc
                await self._rebuild_core()
                continue
            await self._after_commit(committed, one_by_one=True)
            return
        deliveries = [*(("intake", d) for d in part.intake), *(("results", d) for d in _flat(part.results))]
        deliveries += [("returned", d) for d in part.returned]
        ((source, delivery),) = deliveries
        detail = f"failed {MAX_MESSAGE_FAILURES} times alone: {type(error).__name__}: {error}"
        await self._set_aside(
            [_SetAside(message=delivery, source=source, reason="processing_failed", detail=detail)]
        )
        await ack_one(delivery)

    async def _rebuild_core(self) -> None:
        # The failed tick may have changed the core without committing: only PostgreSQL is right.
        self._scheduler = await self._rebuild()
        self._next_wakeup = float("-inf")

    async def _page_in(self) -> None:
        """Read the first attempts the core asked for: every earlier tick is committed, so the
        store holds exactly the backlog the core counts."""
        requests = self._scheduler.page_requests()
        if not requests:
            return
        pages = await self._session.load_pages(requests)
        for request, page in zip(requests, pages, strict=True):
            if not self._scheduler.load_page(request, page):
                log.warning(
                    "scope %r of %r had fewer waiting jobs in the store than counted; corrected",
                    request.scope,
                    request.dependency,
                )
        self._metrics.pages_loaded.inc(len(requests))

    # -- decoding -------------------------------------------------------------

    def _decode_intake(
        self, batch: Batch, set_aside: list[_SetAside]
    ) -> list[tuple[IntakeMessage, str | None]]:
        """The valid intake messages, each with its payload as JSON text."""
        decoded = []
        for message in batch.intake:
            try:
                intake, payload_text = decode_intake(
                    message.body, content_type(message), self._max_payload, routing_key=message.routing_key
                )
                if not self._scheduler.knows(intake.dependency):
                    raise ProtocolError(
                        "unknown_dependency", f"dependency {intake.dependency!r} is not configured"
                    )
            except ProtocolError as exc:
                set_aside.append(
                    _SetAside(message=message, source="intake", reason=exc.reason, detail=exc.detail)
                )
                continue
            except Exception as exc:  # a decoder bug must not turn a message into a poison one
                log.exception("intake message could not be decoded")
                set_aside.append(
                    _SetAside(message=message, source="intake", reason="undecodable", detail=repr(exc))
                )
                continue
            decoded.append((intake, payload_text))
        return decoded

    def _decode_results(
        self, batch: Batch, set_aside: list[_SetAside]
    ) -> list[tuple[Delivery, str, ResultMessage]]:
        """The valid results, each with the dependency whose queue it came through."""
        results = []
        for source, deliveries in batch.results.items():
            if source is UNROUTABLE:
                # No dependency's queue took it: no worker user may have sent it for any job.
                for message in deliveries:
                    set_aside.append(
                        _SetAside(
                            message=message,
                            source="results",
                            reason="unroutable",
                            detail=f"routing key {message.routing_key!r} names no configured dependency",
                        )
                    )
                continue
            for message in deliveries:
                try:
                    results.append((message, source, decode_result(message.body, content_type(message))))
                except ProtocolError as exc:
                    set_aside.append(
                        _SetAside(message=message, source="results", reason=exc.reason, detail=exc.detail)
                    )
                except Exception as exc:  # a decoder bug must not turn a message into a poison one
                    log.exception("result message could not be decoded")
                    set_aside.append(
                        _SetAside(message=message, source="results", reason="undecodable", detail=repr(exc))
                    )
        return results

    def _decode_returned(self, batch: Batch, set_aside: list[_SetAside]) -> list[tuple[str, int]]:
        """Dead-lettered ready messages: (job_id, attempt) of admissions that came back unused."""
        returned = []
        for message in batch.returned:
            try:
                body = json.loads(message.body)
                job_id, attempt = body["job_id"], body["attempt"]
                if not isinstance(job_id, str) or not isinstance(attempt, int):
                    raise TypeError("job_id must be a string and attempt an integer")
            except (ValueError, KeyError, TypeError) as exc:
                set_aside.append(
                    _SetAside(
                        message=message, source="returned", reason="malformed_returned", detail=str(exc)
                    )
                )
                continue
            returned.append((job_id, attempt))
        return returned

    # -- after the commit -----------------------------------------------------

    async def _set_aside(self, items: list[_SetAside]) -> None:
        # Counted and logged once per reason, not per message: a flood makes this a hot path.
        first: dict[tuple[str, str], tuple[_SetAside, int]] = {}
        for item in items:
            key = (item.source, item.reason)
            seen = first.get(key)
            first[key] = (item, 1) if seen is None else (seen[0], seen[1] + 1)
        for (source, reason), (item, count) in first.items():
            self._metrics.rejected_messages.labels(source, reason).inc(count)
            if source == "intake":
                self._metrics.intake_messages.labels("rejected").inc(count)
            self._throttled.warn(
                f"{source}:{reason}", f"set aside a message from {source}: {reason}: {item.detail}", count
            )
        publisher = self._publisher
        await asyncio.gather(
            *(publisher.set_aside(i.message.body, i.source, i.reason, i.detail) for i in items)
        )

    async def _publish(self, admissions: list[Admission], finished: list[Job]) -> None:
        await asyncio.gather(self._publish_admissions(admissions), self._publish_outcomes(finished))

    async def _publish_outcomes(self, finished: list[Job]) -> None:
        if not finished:
            return
        # After the commit, like admissions; at most once (docs/protocol.md).
        refused = await self._publisher.publish_outcomes(finished)
        for (dependency, outcome), count in Counter((j.dependency, j.state.value) for j in finished).items():
            self._metrics.outcomes.labels(dependency, outcome).inc(count)
        if refused:
            log.warning("the broker refused %d outcome messages; they are not sent again", len(refused))

    async def _publish_admissions(self, admissions: list[Admission]) -> None:
        if not admissions:
            return
        failed = await self._publisher.publish_admissions(admissions)
        published = Counter(a.dependency for a in admissions)
        published.subtract(a.dependency for a in failed)
        for dependency, count in published.items():
            if count:
                self._metrics.admissions.labels(dependency).inc(count)
        if failed:
            for dependency, count in Counter(a.dependency for a in failed).items():
                self._metrics.publish_failures.labels(dependency).inc(count)
            log.warning("the broker refused %d admissions; they will wait again", len(failed))
            self._inbox.add_unpublished(failed)

    def _publishes(self, job: Job) -> bool:
        """Is the outcome of this finished job one its dependency's `outcomes` key lists?"""
        wanted = self._published_outcomes
        return wanted is None or job.state.value in wanted.get(job.dependency, ())

    def _count(self, source: str, transition: Transition) -> None:
        self._events[source, transition.verdict.value] += 1
        job = transition.job
        if job is None:
            return
        if transition.verdict in (Verdict.SUCCEEDED, Verdict.DEAD) and self._publishes(job):
            self._finished.append(job)
        if transition.verdict in (Verdict.RETRY_SCHEDULED, Verdict.DEAD) and job.last_error is not None:
            self._failed.append(
                FailedAttempt(
                    job_id=job.job_id, attempt=job.attempt, failed_at=self._now, error=job.last_error
                )
            )

    def _report_gates(self, events: list[GateEvent]) -> None:
        """Circuit changes, pauses and clamped retry_after values: logged and counted."""
        metrics = self._metrics
        for event in events:
            metrics.gate_events.labels(event.dependency, event.kind).inc()
            if event.kind == "retry_after_clamped":
                self._throttled.warn(f"clamped:{event.dependency}", f"{event.dependency}: {event.detail}")
            else:
                level = logging.WARNING if event.kind in ("circuit_open", "paused") else logging.INFO
                log.log(level, "%s: %s (%s)", event.dependency, event.kind.replace("_", " "), event.detail)

    def _observe(self, batch: Batch, started: float) -> None:
        metrics = self._metrics
        metrics.tick_seconds.observe(time.perf_counter() - started)
        if len(batch):
            metrics.tick_messages.observe(len(batch))
        gauge = self._gauge
        for stats in self._scheduler.stats():
            gauge(metrics.held, stats.dependency).set(stats.held)
            gauge(metrics.waiting, stats.dependency, "ready").set(stats.ready)
            gauge(metrics.waiting, stats.dependency, "stored").set(stats.stored)
            gauge(metrics.waiting, stats.dependency, "delayed").set(stats.delayed)
            gauge(metrics.active_scopes, stats.dependency).set(stats.scopes)
        clock = self._scheduler.clock
        for gate in self._scheduler.gate_states():
            gauge(metrics.circuit_state, gate.dependency).set(CIRCUIT_LEVELS[gate.circuit.state.value])
            paused = gate.pause_until is not None and clock < gate.pause_until
            gauge(metrics.paused, gate.dependency).set(1 if paused else 0)
        for dependency, parked in self._scheduler.retry_budget_parked().items():
            gauge(metrics.retry_budget_parked, dependency).set(parked)

    def _gauge(self, metric: Gauge, *labels: str) -> Gauge:
        """The gauge of these labels, looked up once: labels() costs 4 µs, and every tick sets
        several per dependency (the set of dependencies is fixed for a term)."""
        key = (metric, labels)
        child = self._gauges.get(key)
        if child is None:
            child = self._gauges[key] = metric.labels(*labels)
        return child

    async def _observe_scopes_forever(self) -> None:
        """The per-scope gauges, on their own clock: an idle leader ticks seldom, but the age
        of what waits keeps growing."""
        while True:
            started = time.monotonic()
            self._observe_scopes()
            took = time.monotonic() - started
            await asyncio.sleep(max(SCOPE_METRICS_EVERY, SCOPE_METRICS_SHARE * took))

    def _observe_scopes(self) -> None:
        """Per-scope gauges for the largest backlogs only (O(scopes): not per tick, see SCOPE_METRICS_SHARE)."""
        metrics, scheduler, now = self._metrics, self._scheduler, self._clock()
        for dependency in scheduler.policies:
            top = scheduler.scope_stats(dependency, top=TOP_SCOPES)
            shown = {s.scope for s in top}
            for scope in self._shown_scopes.get(dependency, set()) - shown:
                for gauge in (
                    metrics.scope_waiting,
                    metrics.scope_held,
                    metrics.scope_admitted,
                    metrics.scope_oldest_waiting,
                ):
                    gauge.remove(dependency, scope)
            self._shown_scopes[dependency] = shown
            for stats in top:
                metrics.scope_waiting.labels(dependency, stats.scope).set(stats.waiting)
                metrics.scope_held.labels(dependency, stats.scope).set(stats.held)
                metrics.scope_admitted.labels(dependency, stats.scope).set(stats.admitted)
                since = stats.oldest_waiting_since
                metrics.scope_oldest_waiting.labels(dependency, stats.scope).set(
                    max(0.0, now - since) if since is not None else 0.0
                )
            oldest = scheduler.oldest_waiting_since(dependency)
            metrics.oldest_waiting.labels(dependency).set(
                max(0.0, now - oldest) if oldest is not None else 0.0
            )
