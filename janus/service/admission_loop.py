"""The admission loop: wait for deliveries or the core's next wakeup, run a tick, and do what a
committed tick leaves to do.

The order is what makes Janus durable:
  1. a tick (`service/tick.py`) decodes the batch, drives the core and writes it all in ONE
     statement fenced by the leader lease, and returns what is left to do;
  2. only after the commit: publish the admissions and the outcomes (committed to the outbox in
     the same statement: service/outbox.py), queued for the socket right away, their confirms
     awaited in the background; set aside the bad input and ack the batch, in the background
     too (the next tick need not wait): a bad message is acked only
     once its copy on janus.rejected is confirmed, and each channel's multiple-acks go out in
     order (a refused admission feeds back into the next tick).
If anything fails between the core's decision and the commit, the core is ahead of the
database. A lost connection or lease propagates (the term ends, the core is rebuilt from
PostgreSQL). Any other failure may be tied to one message (PostgreSQL refused what it
carried; a bug its content triggers): the core is rebuilt from PostgreSQL in place and the
batch retried one message at a time, each up to MAX_MESSAGE_FAILURES times, after which that
message alone is set aside. So no message can block the intake forever, and the good messages
around it go through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from janus.api.metrics import Metrics
from janus.broker.consumer import Delivery, RawChannel, ack_one, ack_up_to
from janus.broker.publisher import Publisher
from janus.core.jobs import Admission, Job
from janus.core.outbox import OutboxMessage
from janus.core.policy import RateLimit
from janus.core.scheduler import Scheduler
from janus.errors import JanusError, LeadershipLost, StatementRefused
from janus.service.faults import ADMISSIONS_COMMITTED, OUTCOMES_COMMITTED, crash_point
from janus.service.holds import ResultHolds
from janus.service.inbox import Batch, Control, Inbox
from janus.service.leadership import Term
from janus.service.linger import Linger
from janus.service.maybe_sent import MaybeSent
from janus.service.observe import Observer
from janus.service.outbox import OutboxRelay
from janus.service.tick import SetAside, TickOptions, TickResult, deliveries, run_tick, set_aside_body
from janus.store.session import LeaderSession

log = logging.getLogger("janus.admission")

FULL_BATCH = 256  # no linger when this many already wait (service/linger.py says when else)
MAX_MESSAGE_FAILURES = 3  # tries of one message alone before it is set aside
# A flood of results (bad ones included) is taken in slices: each tick, and so the wait of
# every dependency's admissions, stays short, and a flooded results queue gets no more of a
# tick than any other (benchmarks/flood.py).
RESULTS_PER_QUEUE_PER_TICK = 128
MAX_RESULTS_PER_TICK = 512


def tied_to_input(error: Exception) -> bool:
    """Could this failure of a tick be caused by a message in it (rather than by a lost
    connection or lease, which retrying message by message cannot mend)?"""
    if isinstance(error, StatementRefused):
        return True
    return not isinstance(error, JanusError | OSError)


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
        options: TickOptions,
        clock: Callable[[], float],
        publishing: asyncio.TaskGroup,
        rebuild: Callable[[], Awaitable[Scheduler]],
        outbox: OutboxRelay,
        bad_results_limit: RateLimit | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._session = session
        self._publisher = publisher
        self._inbox = inbox
        self._term = term
        self._options = options
        self._clock = clock
        self._publishing = publishing
        self._rebuild = rebuild
        self._outbox = outbox
        self._maybe_sent: MaybeSent | None = None  # read before the term's first tick
        self._observer = Observer(metrics)
        self._holds = ResultHolds(inbox, bad_results_limit, self._observer)
        # A new term starts with one tick: restored jobs may be eligible with no delivery to wake us.
        self._next_wakeup: float | None = float("-inf")
        self._in_flight: set[asyncio.Task[None]] = set()
        # Per consuming channel, the task that acks its last batch: the next waits for it, so a
        # multiple-ack never covers a bad message whose copy on janus.rejected is unconfirmed.
        self._acking: dict[RawChannel, asyncio.Task[None]] = {}
        self._last_batch = 0
        self._linger = Linger(time.perf_counter)

    @property
    def scheduler(self) -> Scheduler:
        """The core in use (replaced by a rebuild after a failed tick)."""
        return self._scheduler

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop`; then one last tick for what was already delivered."""
        # In the term's task group: if it fails, the term ends rather than limp on unobserved.
        observing = self._publishing.create_task(
            self._observer.scopes_forever(lambda: self._scheduler, self._clock), name="scope-metrics"
        )
        stopping: asyncio.Task[Any] | None = None
        try:
            self._maybe_sent = MaybeSent(await self._session.maybe_sent())
            if self._maybe_sent:
                log.info(
                    "%d admissions an earlier term committed may never have been published: held "
                    "until their leases end, then returned without charging an attempt",
                    len(self._maybe_sent),
                )
            stopping = asyncio.ensure_future(stop.wait())
            stopping.add_done_callback(self._stopped)
            while not stop.is_set():
                await self._wait()
                await self.tick()
                if self._inbox.ready.is_set():
                    # The tick's publishes are queued, not yet written: the connection's writer
                    # gets its turn before the next tick's decisions delay it further.
                    await asyncio.sleep(0)
            await self.tick()
            self._holds.stop()
            while self._inbox.results_waiting():  # results are taken in slices: finish what was delivered
                await self._inbox.ready.wait()  # (a queue may be held until its bad results are set aside)
                await self.tick()
            await self.drain_publishing()
            await self._outbox.flush()  # the last confirmations: else the next term sends them again
        finally:
            if stopping is not None:
                stopping.cancel()
            observing.cancel()
            self._holds.stop()

    def _stopped(self, stopping: asyncio.Task[Any]) -> None:
        if not stopping.cancelled():
            self._inbox.ready.set()  # wakes `_wait`: the loop sees `stop` and ends

    async def _wait(self) -> None:
        if self._inbox.ready.is_set():
            if (
                self._linger.wanted(self._last_batch)
                and self._inbox.servable(RESULTS_PER_QUEUE_PER_TICK) < FULL_BATCH
            ):
                # A moment's wait makes the next statement bigger, when that pays (service/linger.py).
                # Counted as the next tick can take them: a flood waiting in a held queue (or
                # beyond a slice) would otherwise stop the lingering, and every other
                # dependency's ticks would shrink (benchmarks/flood.py).
                self._observer.lingered()
                await asyncio.sleep(self._linger.linger)
            return
        timeout = None
        if self._next_wakeup is not None:
            timeout = max(self._next_wakeup - self._clock(), 0.0)
            if timeout == 0.0:
                return
        self._observer.refresh_if_stale(self._scheduler)  # about to idle: the gauges catch up
        began = time.perf_counter()
        # `stop` sets `ready` too (see run): one wait, no task per wakeup.
        try:
            async with asyncio.timeout(timeout):
                await self._inbox.ready.wait()
        except TimeoutError:
            pass
        self._linger.idled(time.perf_counter() - began)

    async def drain_publishing(self) -> None:
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def tick(self) -> None:
        started = time.perf_counter()
        batch = self._inbox.take(per_queue=RESULTS_PER_QUEUE_PER_TICK, total=MAX_RESULTS_PER_TICK)
        self._last_batch = len(batch)
        self._linger.took(len(batch))
        if not self._term.may_act():
            raise LeadershipLost("the lease may have expired: not acting")
        if batch.controls:
            await self._apply_controls(batch.controls)
        try:
            result = await self._run_tick(batch)
        except Exception as exc:
            if not tied_to_input(exc) or not (batch.intake or batch.results or batch.returned):
                raise  # no message to pin it on: a bug, which must stop the process, not loop
            await self._isolate(batch, exc)
        else:
            await self._after_commit(result, one_by_one=False)
        self._observer.tick(len(batch), started, self._scheduler, first_arrival=batch.first_arrival)

    def set_options(self, options: TickOptions) -> None:
        """A new version of the policy: its outcomes from the next tick on."""
        self._options = options

    async def _apply_controls(self, controls: list[Control]) -> None:
        """Operators' changes, between two ticks: every earlier tick is committed, so a rebuild
        reads exactly what the core had (service/steer.py)."""
        for control in controls:
            if control.rebuild:
                await self._rebuild_core()
            now = self._clock()
            for steering in control.steering:
                self._scheduler.steer(steering, now)
            self._next_wakeup = float("-inf")
            if not control.done.done():
                control.done.set_result(None)

    async def _run_tick(self, batch: Batch) -> TickResult:
        result = await run_tick(
            batch, self._scheduler, self._session, self._clock, self._options, self._maybe_sent
        )
        self._observer.committed(result)
        self._next_wakeup = result.next_wakeup
        return result

    # -- after the commit -----------------------------------------------------

    async def _after_commit(self, result: TickResult, *, one_by_one: bool) -> None:
        if result.outcomes:
            crash_point(OUTCOMES_COMMITTED)
        if result.admissions:
            crash_point(ADMISSIONS_COMMITTED)
        self._observer.gate_events(result.gate_events)
        # Admissions (and outcomes) first: they need not wait for bad input to be set aside.
        if result.admissions or result.outcomes:
            # Written now, with no task in between (broker/batch.py): the batch is on its way
            # before the next tick's decisions; only the confirms are awaited in the background.
            admitting = self._publisher.start_admissions(result.admissions) if result.admissions else None
            finishing = self._publisher.start_outcomes(result.outcomes) if result.outcomes else None
            self._background(
                self._confirmed(result.admissions, admitting, result.outcomes, finishing, result.finished)
            )
        batch = result.batch
        if one_by_one:
            # Messages of a batch being isolated are acked singly: a multiple-ack would also
            # ack the earlier ones still to be retried. (Rare: awaited, simply.)
            if result.set_aside:
                await self._set_aside(result.set_aside)
            for _, delivery in deliveries(batch):
                await ack_one(delivery)
            return
        bad: dict[RawChannel, list[SetAside]] = {}
        for item in result.set_aside:
            bad.setdefault(item.message.channel, []).append(item)
        # Each list holds the oldest unacked deliveries of its channel, in order (one channel per
        # queue): one multiple-ack of the last covers the lot, once its bad ones are set aside.
        for channel_part in (batch.intake, batch.returned):
            if channel_part:
                self._settle_in_order(channel_part[-1], bad)
        for source, results in batch.results.items():
            bad_count = len(bad.get(results[-1].channel, ()))
            settled = self._settle_in_order(results[-1], bad)
            if bad_count:
                # Held until set aside: its next slice gathers meanwhile; and, if its bad
                # results went over the limit, until the limit lets it go.
                self._holds.hold(source, bad_count, settled)

    def _settle_in_order(self, last: Delivery, bad: dict[RawChannel, list[SetAside]]) -> asyncio.Task[None]:
        """Set aside and ack a channel's part of the batch, after its previous part."""
        channel = last.channel
        settling = self._background(self._settle(bad.pop(channel, []), last, self._acking.get(channel)))
        self._acking[channel] = settling
        return settling

    async def _settle(self, bad: list[SetAside], last: Delivery, previous: asyncio.Task[None] | None) -> None:
        """Set aside a channel's bad deliveries of one batch, then ack the batch (nothing is lost:
        a bad message is acked only after its copy is confirmed), after the channel's previous ack."""
        if bad:
            await self._set_aside(bad)
        if previous is not None:
            await previous
        await ack_up_to(last)

    def _background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Under the term's task group: a failure (a lost broker) ends the term."""
        task = self._publishing.create_task(work)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return task

    async def _set_aside(self, items: list[SetAside]) -> None:
        self._observer.set_aside(items)
        publisher, cap = self._publisher, self._options.max_payload_bytes
        await asyncio.gather(*(self._set_aside_one(publisher, item, cap) for item in items))

    @staticmethod
    async def _set_aside_one(publisher: Publisher, item: SetAside, max_payload_bytes: int) -> None:
        body, original_size = set_aside_body(item, max_payload_bytes)  # an oversized one truncated
        await publisher.set_aside(body, item.source, item.reason, item.detail, original_size=original_size)

    async def _confirmed(
        self,
        admissions: list[Admission],
        admitting: Awaitable[list[Admission]] | None,
        outcomes: list[OutboxMessage],
        finishing: Awaitable[list[OutboxMessage]] | None,
        finished: list[Job],
    ) -> None:
        await asyncio.gather(
            self._admissions_confirmed(admissions, admitting),
            self._outcomes_confirmed(outcomes, finishing, finished),
        )

    async def _admissions_confirmed(
        self, admissions: list[Admission], admitting: Awaitable[list[Admission]] | None
    ) -> None:
        if admitting is None:
            return
        refused = await admitting
        # Every one confirmed or refused (a refused one comes back as unpublished): sent.
        self._outbox.sent({a.admitted_at for a in admissions})
        self._observer.published(admissions, refused)
        if refused:
            self._inbox.add_unpublished(refused)

    async def _outcomes_confirmed(
        self,
        outcomes: list[OutboxMessage],
        finishing: Awaitable[list[OutboxMessage]] | None,
        finished: list[Job],
    ) -> None:
        if finishing is None:
            return
        # After the commit, like admissions; at least once: the outbox keeps each until confirmed.
        refused = await finishing
        self._outbox.published(outcomes, refused)
        held = {m.job_id for m in refused}
        self._observer.outcomes(finished, [job for job in finished if job.job_id in held])

    # -- a tick that failed ---------------------------------------------------

    async def _isolate(self, batch: Batch, error: Exception) -> None:
        """Retry a failed batch message by message; set aside each that fails alone, again and again."""
        self._observer.tick_failed(len(batch), error, traceback=not isinstance(error, StatementRefused))
        await self._rebuild_core()
        # First without any message: if that fails too, the messages are not the cause (a bug):
        # the error stops the process rather than setting good messages aside one by one.
        # Jobs revived by hand carry no message to blame: they go with this empty part.
        nothing = Batch(intake=[], results={}, returned=[], unpublished=[], revived=batch.revived)
        try:
            await self._after_commit(await self._run_tick(nothing), one_by_one=True)
        except Exception as exc:
            raise error from exc
        parts = [Batch(intake=[d], results={}, returned=[], unpublished=[]) for d in batch.intake]
        parts += [
            Batch(intake=[], results={source: [d]}, returned=[], unpublished=[])
            for source, results in batch.results.items()
            for d in results
        ]
        parts += [Batch(intake=[], results={}, returned=[d], unpublished=[]) for d in batch.returned]
        if batch.unpublished:
            parts.append(Batch(intake=[], results={}, returned=[], unpublished=batch.unpublished))
        for part in parts:
            await self._alone(part, error)

    async def _alone(self, part: Batch, error: Exception) -> None:
        for _ in range(MAX_MESSAGE_FAILURES):
            try:
                result = await self._run_tick(part)
            except Exception as exc:
                if not tied_to_input(exc) or not (part.intake or part.results or part.returned):
                    raise
                error = exc
                await self._rebuild_core()
                continue
            await self._after_commit(result, one_by_one=True)
            return
        ((source, delivery),) = deliveries(part)
        detail = f"failed {MAX_MESSAGE_FAILURES} times alone: {type(error).__name__}: {error}"
        await self._set_aside(
            [SetAside(message=delivery, source=source, reason="processing_failed", detail=detail)]
        )
        await ack_one(delivery)

    async def _rebuild_core(self) -> None:
        # The failed tick may have changed the core without committing: only PostgreSQL is right.
        self._scheduler = await self._rebuild()
        self._next_wakeup = float("-inf")
