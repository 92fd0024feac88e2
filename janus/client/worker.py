"""A worker that follows the protocol by construction.

For each admission: ack it *before* starting (so the broker never redelivers
work that may have started); refuse it unstarted if it has expired; run the
handler, cutting it off before the lease ends; publish exactly one result, with a
publisher confirm, again and again over a new connection until one is confirmed
(a lost connection must not lose a result: Janus sets aside the copies it already
applied as `duplicate_result`). A lost connection is replaced, and the ready queues
consumed again, until `stop`.

Handlers are coroutine functions, or plain functions, which run on threads of the
worker's own (`max_in_flight` threads: see `HandlerThreads`). A coroutine past its lease is
cancelled. A plain function cannot be: at the cut-off the worker reports the failure
(so Janus frees the slot on time, and the result is never published after the
lease), discards whatever the function returns later, and keeps that function's
thread and handler slot busy until it does return, so the worker never runs more
than `max_in_flight` functions at once. The dependency may then see one call more than
its concurrency limit for as long as such a function overruns: give plain functions
timeouts of their own (HTTP clients have them) below the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from aiormq.exceptions import ChannelAccessRefused, ChannelNotFoundEntity

from janus.broker import BROKER_ERRORS, topology
from janus.broker.connection import connect
from janus.client.acked import AckedAdmissions
from janus.client.handler_outcomes import Cost, Failed, RetryAfter, Throttled
from janus.client.threads import HandlerThreads
from janus.errors import BrokerError, JanusError, ProtocolError, TopologyMissing
from janus.protocol import CONTENT_TYPE, ReadyMessage, decode_ready, encode_result
from janus.urls import redact

log = logging.getLogger("janus.worker")

# Finish (and report) this long before the lease ends, so Janus never frees a slot
# that this worker still uses.
LEASE_SAFETY = 0.1
CONNECT_TIMEOUT = 30.0  # seconds to reach RabbitMQ and find the ready queues (Janus declares them)
# After a lost connection: reconnect (and publish unconfirmed results again) after this
# long, doubling up to the cap.
RECONNECT_FIRST_DELAY = 0.1
RECONNECT_MAX_DELAY = 5.0
# A result not confirmed is tried again at most this far apart: its lease runs meanwhile, and
# a result that reaches Janus after the lease ends lets the job run again.
RESULT_RETRY_MAX_DELAY = 1.0
# What a lost connection or channel, or a broker that nacks a publish, raises through aio-pika.
_LOST = BROKER_ERRORS
# The broker closed the channel over this very publish, and would again: the worker's user may
# not publish with this routing key, or janus.results is gone. Not retried.
_REFUSED = (ChannelAccessRefused, ChannelNotFoundEntity)
# Reconnecting: the broker still away, or a refused setting (a password changed), which this
# worker cannot mend while results wait to be published: it keeps trying, and says why.
_RECONNECT_FAILED: tuple[type[Exception], ...] = (*BROKER_ERRORS, JanusError)


# What a handler receives: the ready message, validated (docs/protocol.md).
ReadyJob = ReadyMessage


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkRecord:
    """What a worker saw of one admission: the raw material of every end-to-end check."""

    job_id: str
    dependency: str
    scope: str
    attempt: int
    admitted_at: float
    expires_at: float
    received_at: float  # when the delivery reached the worker (before it waited for a free handler)
    started_at: float | None  # None: refused because it had expired (or expired while being taken)
    finished_at: float | None
    outcome: Literal["success", "failure", "expired"]
    error: str | None = None
    try_number: int | None = None  # the job's try in its current life, if Janus said (ReadyJob)


# A coroutine function, or a plain function (run on the worker's threads); what it returns is
# ignored, unless it is a `Cost`.
Handler = Callable[[ReadyJob], object]


def is_coroutine_function(handler: object) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 -- an object whose __call__ is async
    )


def _cost(units: float | None) -> float | None:
    """A reported cost as the protocol takes it (a finite number >= 0), or None with a warning."""
    if units is None:
        return None
    if isinstance(units, int | float) and not isinstance(units, bool) and math.isfinite(units) and units >= 0:
        return float(units)
    log.warning("a handler reported cost %r: not a finite number >= 0, not reported", units)
    return None


class Worker:
    """Consume admissions of each dependency of `handlers` and report their results.

    Use as `async with Worker(url, handlers):` (or `await start()` ... `await stop()`).
    At most `max_in_flight` handlers run at once (default: `prefetch`); the broker delivers
    at most `prefetch` admissions that no handler has taken yet, over all dependencies."""

    def __init__(
        self,
        amqp_url: str,
        handlers: Mapping[str, Handler],
        *,
        prefetch: int = 50,
        max_in_flight: int | None = None,
        on_record: Callable[[WorkRecord], None] | None = None,
        clock: Callable[[], float] = time.time,
        name: str = "janus-worker",
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self._url = amqp_url
        self._handlers = dict(handlers)
        self._async = {dependency: is_coroutine_function(h) for dependency, h in self._handlers.items()}
        self._prefetch = prefetch
        self._max_in_flight = max_in_flight or prefetch
        # An admission waits unacked for a free handler, and is checked for expiry only once it has one.
        self._handlers_free = asyncio.Semaphore(self._max_in_flight)
        self._threads = HandlerThreads(self._max_in_flight, f"{name}-thread")
        self._on_record = on_record
        self._clock = clock
        self._name = name
        self._connect_timeout = connect_timeout
        self._connection: AbstractConnection | None = None
        self._results_channel: AbstractChannel | None = None
        self._results: AbstractExchange | None = None
        self._reopening = asyncio.Lock()  # one task reopens a closed results channel, the others wait
        self._tasks: set[asyncio.Task[None]] = set()
        self._acked = AckedAdmissions()  # to drop a copy the broker redelivers after a lost ack
        self._channel: AbstractChannel | None = None  # consuming, every dependency
        self._consuming: list[tuple[AbstractQueue, str]] = []
        self._connected = asyncio.Event()  # set while a connection is up, its exchange and consumers ready
        self._lost = asyncio.Event()  # the current connection closed
        self._taking = False  # consume ready queues (from start until stop)
        self._closing = False  # stop or abort: a closed connection is not replaced
        self._reconnecting: asyncio.Task[None] | None = None
        self._stopping = False
        self._in_take = 0  # deliveries with a handler slot, not yet started as a task
        self._settled = asyncio.Event()  # set when _in_take drops to 0
        self.running = 0  # handlers started and not finished
        self.overrunning = 0  # plain functions past their lease, still running (reported failed)

    async def start(self) -> None:
        """Connect and consume; waits up to `connect_timeout` for Janus to declare the ready queues.

        Raises ConnectionSettingsError, BrokerError, or TopologyMissing (a dependency Janus has
        never run with on this vhost). Once started, a lost connection is replaced until `stop`."""
        self._taking, self._closing, self._stopping = True, False, False
        try:
            await self._connect()
        except BaseException:
            await self.abort()
            raise
        self._reconnecting = asyncio.create_task(self._stay_connected(), name=f"{self._name}-reconnect")

    async def _connect(self) -> None:
        """A connection, its results exchange (with confirms) and, while taking work, one channel
        consuming every ready queue: its prefetch bounds the admissions this worker holds
        untaken, all dependencies together, as max_in_flight bounds those it runs."""
        connection = await connect(self._url, name=self._name, timeout=self._connect_timeout)
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        try:
            results_channel, results = await topology.await_exchange(
                connection, topology.RESULTS_EXCHANGE, confirms=True, timeout=self._connect_timeout
            )
            channel: AbstractChannel | None = None
            consuming: list[tuple[AbstractQueue, str]] = []
            if self._taking:
                for dependency in self._handlers:
                    await self._await_ready_queue(connection, dependency)
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=self._prefetch)
                for dependency in self._handlers:
                    queue = await channel.get_queue(topology.ready_queue(dependency), ensure=True)
                    consuming.append((queue, await queue.consume(self._on_message)))
        except BaseException:
            with contextlib.suppress(*_LOST):
                await connection.close()
            raise
        self._connection, self._results_channel, self._results = connection, results_channel, results
        self._channel, self._consuming, self._lost = channel, consuming, lost
        self._connected.set()

    async def _await_ready_queue(self, connection: AbstractConnection, dependency: str) -> None:
        name = topology.ready_queue(dependency)
        try:
            probe, _ = await topology.await_queue(connection, name, timeout=self._connect_timeout)
        except ChannelNotFoundEntity:
            raise TopologyMissing(
                f"no queue {name!r} on {redact(self._url)}: Janus has never run with dependency "
                f"{dependency!r} on this vhost"
            ) from None
        except BROKER_ERRORS as exc:
            raise BrokerError(f"cannot reach {name!r}: {exc!r}") from exc
        await probe.close()

    async def _stay_connected(self) -> None:
        """Replace a lost connection (until stop or abort): results waiting for a confirm are
        published again on the new one, and the ready queues are consumed again."""
        while True:
            await self._lost.wait()
            self._connected.clear()
            if self._closing:
                return
            log.warning("%s: lost its connection to the broker; reconnecting", self._name)
            delay = RECONNECT_FIRST_DELAY
            while not self._closing:
                try:
                    await self._connect()
                    break
                except _RECONNECT_FAILED as exc:
                    log.warning("%s: reconnecting failed (%s); again in %.1f s", self._name, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, RECONNECT_MAX_DELAY)

    async def stop(self) -> None:
        """Stop taking work, let running handlers finish and report (over a new connection if the
        broker connection is lost meanwhile), then disconnect.

        Admissions delivered but not started go back to the queue unstarted (the consuming
        channel closes: the broker requeues what was not acked), for another worker or, once
        they expire, back to Janus, at no attempt's cost."""
        if self._connection is None:
            return
        self._stopping, self._taking = True, False
        await asyncio.gather(*(queue.cancel(tag) for queue, tag in self._consuming), return_exceptions=True)
        self._consuming.clear()
        if self._channel is not None:
            with contextlib.suppress(*_LOST):
                await self._channel.close()
        while self._tasks or self._in_take:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            else:  # a delivery between its ack and its task: it started, and must report
                self._settled.clear()
                await self._settled.wait()
        if self.overrunning:
            log.warning(
                "%d plain functions still run past their lease: they were reported failed, and "
                "what they return is discarded",
                self.overrunning,
            )
        await self._close()

    async def abort(self) -> None:
        """Disconnect at once, as a crashed worker would: running handlers are cancelled unreported."""
        for task in self._tasks:
            task.cancel()
        self._consuming.clear()
        await self._close()

    async def _close(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            await asyncio.gather(self._reconnecting, return_exceptions=True)
            self._reconnecting = None
        self._connected.clear()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        self._threads.close()

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        arrived = self._clock()
        await self._handlers_free.acquire()
        if self._stopping:  # its channel is closing: the broker puts it back, unstarted
            self._handlers_free.release()
            return
        self._in_take += 1
        try:
            started = await self._take(message, arrived)
        except BaseException:
            self._handlers_free.release()
            raise
        finally:
            self._in_take -= 1
            if not self._in_take:
                self._settled.set()
        if not started:
            self._handlers_free.release()

    async def _take(self, message: AbstractIncomingMessage, received: float) -> bool:
        """Start the admission's handler (True), or hand the admission back unstarted (False).

        `received`: when the delivery reached this worker (it may have waited for a free handler)."""
        now = self._clock()
        try:
            job = decode_ready(message.body)
        except ProtocolError as exc:
            # Without a readable job_id and attempt it cannot report: hand it back (dead-lettered to
            # Janus, which frees the slot at once if it can read it, and sets it aside if not).
            log.error("unreadable admission, returned to Janus: %s", exc)
            await self._settle(message, ack=False)
            return False
        if message.redelivered and self._acked.started_here(job.job_id, job.attempt, now):
            # Its ack was lost with a connection: it started here and reports from here. Checked
            # before expiry, since handed back to Janus it would free the slot it still holds.
            log.info(
                "%s: %s attempt %d delivered again after its ack was lost: dropped",
                self._name,
                job.job_id,
                job.attempt,
            )
            await self._settle(message, ack=True)
            return False
        if now >= job.expires_at:
            # Too late to start: hand the admission back to Janus unstarted.
            await self._settle(message, ack=False)
            self._record(job, received, None, None, "expired")
            return False
        if not await self._settle(message, ack=True):
            return False  # its connection is gone: the broker gives the admission to a consumer again
        self._acked.remember(job.job_id, job.attempt, job.expires_at, job.lease_expires_at, now)
        task = asyncio.create_task(self._work(job, received))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _settle(self, message: AbstractIncomingMessage, *, ack: bool) -> bool:
        """Ack (before starting) or reject (requeue=false, unstarted) a delivery; False if its
        channel is gone, in which case the broker redelivers it, unstarted, to a consumer."""
        try:
            if ack:
                await message.ack()
            else:
                await message.reject(requeue=False)
        except _LOST as exc:
            log.debug("%s: could not settle a delivery of a lost connection: %r", self._name, exc)
            return False
        return True

    async def _work(self, job: ReadyJob, received: float) -> None:
        """Run the handler and report; releases the handler slot, unless a plain function past
        its lease holds it: then it is released when the function returns (`_overrun`)."""
        slot = _Slot()
        try:
            await self._run_and_report(job, received, slot)
        finally:
            if not slot.held_by_overrun:
                self._handlers_free.release()

    def _overrun(self, running: asyncio.Future[object], slot: _Slot) -> None:
        """A plain function past its lease: it keeps its thread and its slot until it returns."""
        slot.held_by_overrun = True
        self.overrunning += 1

        def returned(future: asyncio.Future[object]) -> None:
            if not future.cancelled():
                future.exception()  # retrieved, so that asyncio does not log it as lost: discarded
            self.overrunning -= 1
            self._handlers_free.release()

        running.add_done_callback(returned)

    async def _run_and_report(self, job: ReadyJob, received: float, slot: _Slot) -> None:
        now = self._clock()
        started: float | None = now
        error: str | None = None
        retry_after: float | None = None
        throttled = False
        cost: float | None = None
        elapsed = 0.0
        if now >= job.expires_at:
            # The ack took us past expires_at (a stalled event loop): starting now would break
            # the rate promise. Acked, it cannot be handed back: report it failed, unstarted.
            started, error = None, "not started: the admission expired while it was being taken"
        else:
            began = time.monotonic()  # the duration on a clock that never steps (Janus trims by it)
            error, retry_after, throttled, cost = await self._run(job, now, slot)
            elapsed = time.monotonic() - began
        finished = self._clock() if started is not None else None
        outcome: Literal["success", "failure"] = "success" if error is None else "failure"
        self._record(job, received, started, finished, outcome, error)
        body = encode_result(
            job_id=job.job_id,
            attempt=job.attempt,
            outcome=outcome,
            error=error,
            retry_after=retry_after,
            throttled=throttled,
            # The handler's time, the adaptive concurrency's signal; none for a call never made.
            duration=elapsed if started is not None else None,
            cost=cost,
        )
        await self._report(job, body)

    async def _run(
        self, job: ReadyJob, started: float, slot: _Slot
    ) -> tuple[str | None, float | None, bool, float | None]:
        """Run the handler until it returns or its lease's cut-off: (error, retry_after, throttled,
        the actual cost it reported)."""
        budget = job.lease_expires_at - LEASE_SAFETY - started if job.lease_expires_at is not None else None
        timeout = max(budget, 0.0) if budget is not None else None
        running: asyncio.Future[object] | None = None
        self.running += 1
        try:
            running = self._start(job)
            if self._async[job.dependency]:
                returned = await asyncio.wait_for(running, timeout)  # cancelled at the cut-off, and awaited
            else:
                returned = await asyncio.wait_for(
                    asyncio.shield(running), timeout
                )  # a thread runs on regardless
        except RetryAfter as exc:
            return str(exc), exc.seconds, True, _cost(exc.cost)
        except Throttled as exc:
            return str(exc), exc.retry_after, True, _cost(exc.cost)
        except Failed as exc:
            return str(exc), None, False, _cost(exc.cost)
        except TimeoutError:
            return "handler did not finish within the lease", None, False, None
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}", None, False, None
        finally:
            self.running -= 1
            if running is not None and not running.done():  # a plain function's thread cannot be stopped
                self._overrun(running, slot)
                log.warning(
                    "%s of %s: the function runs past its lease; reported failed, its result will be discarded",
                    job.job_id,
                    job.dependency,
                )
        return None, None, False, _cost(returned.units) if isinstance(returned, Cost) else None

    async def _report(self, job: ReadyJob, body: bytes) -> None:
        """Publish a result until the broker confirms it: again over a new connection if the
        connection is lost before the confirm (the broker may have taken the first copy: Janus
        sets such a repeat aside as `duplicate_result`)."""
        delay = RECONNECT_FIRST_DELAY
        while True:
            await self._connected.wait()
            results = self._results
            assert results is not None
            try:
                await results.publish(
                    aio_pika.Message(
                        body, content_type=CONTENT_TYPE, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                    ),
                    # Routed to this dependency's results queue; a worker user of another dependency
                    # may not use this key (RabbitMQ topic permissions, docs/security.md).
                    routing_key=job.dependency,
                )
                return
            except _REFUSED as exc:
                log.error("%s: the broker refused the result of %r: %r", self._name, job.job_id, exc)
                return  # Janus counts the attempt failed when its lease ends
            except _LOST as exc:
                log.warning(
                    "%s: the result of %r attempt %d was not confirmed (%r); publishing it again",
                    self._name,
                    job.job_id,
                    job.attempt,
                    exc,
                )
            await asyncio.sleep(delay)
            delay = min(2 * delay, RESULT_RETRY_MAX_DELAY)
            await self._reopen_results(results)

    async def _reopen_results(self, failed: AbstractExchange) -> None:
        """A new results channel if the broker closed the one `failed` was on while the connection
        stayed up (a lost connection is replaced by `_stay_connected` instead)."""
        async with self._reopening:
            connection, channel = self._connection, self._results_channel
            if self._results is not failed or connection is None or connection.is_closed:
                return  # reopened meanwhile, or the connection itself is being replaced
            if channel is not None and not channel.is_closed:
                return
            try:
                self._results_channel, self._results = await topology.await_exchange(
                    connection, topology.RESULTS_EXCHANGE, confirms=True, timeout=RECONNECT_MAX_DELAY
                )
            except _LOST as exc:
                log.warning("%s: reopening the results channel failed: %r", self._name, exc)

    def _start(self, job: ReadyJob) -> asyncio.Future[object]:
        handler = self._handlers[job.dependency]
        if self._async[job.dependency]:
            coroutine: Any = handler(job)
            task: asyncio.Future[object] = asyncio.ensure_future(coroutine)
            return task
        return asyncio.wrap_future(self._threads.submit(lambda: handler(job)))

    def _record(
        self,
        job: ReadyJob,
        received: float,
        started: float | None,
        finished: float | None,
        outcome: Literal["success", "failure", "expired"],
        error: str | None = None,
    ) -> None:
        if self._on_record is not None:
            self._on_record(
                WorkRecord(
                    job_id=job.job_id,
                    dependency=job.dependency,
                    scope=job.scope,
                    attempt=job.attempt,
                    admitted_at=job.admitted_at,
                    expires_at=job.expires_at,
                    received_at=received,
                    started_at=started,
                    finished_at=finished,
                    outcome=outcome,
                    error=error,
                    try_number=job.try_number,
                )
            )


@dataclass(kw_only=True, slots=True)
class _Slot:
    held_by_overrun: bool = False  # a plain function past its lease releases it when it returns
