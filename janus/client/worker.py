"""A worker that follows the protocol by construction.

For each admission: ack it *before* starting (so the broker never redelivers
work that may have started); refuse it unstarted if it has expired; run the
handler, cancelling it before the lease ends; publish exactly one result, with a
publisher confirm, again and again over a new connection until one is confirmed
(a lost connection must not lose a result: Janus sets aside the copies it already
applied as `duplicate_result`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

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
from janus.errors import ProtocolError
from janus.protocol import CONTENT_TYPE, ReadyMessage, decode_ready, encode_result

log = logging.getLogger("janus.worker")

# Finish (and report) this long before the lease ends, so Janus never frees a slot
# that this worker still uses.
LEASE_SAFETY = 0.1
# After a lost connection: reconnect (and publish unconfirmed results again) after this
# long, doubling up to the cap.
RECONNECT_FIRST_DELAY = 0.1
RECONNECT_MAX_DELAY = 5.0
# What a lost connection or channel, or a broker that nacks a publish, raises through aio-pika.
_LOST = BROKER_ERRORS
# The broker closed the channel over this very publish, and would again: the worker's user may
# not publish with this routing key, or janus.results is gone. Not retried.
_REFUSED = (ChannelAccessRefused, ChannelNotFoundEntity)


class RetryAfter(Exception):
    """Raise from a handler when the dependency asked to back off (e.g. HTTP 429 Retry-After)."""

    def __init__(self, seconds: float, message: str = "") -> None:
        super().__init__(message or f"retry after {seconds:g}s")
        self.seconds = seconds


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


Handler = Callable[[ReadyJob], Awaitable[None]]


class Worker:
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
    ) -> None:
        self._url = amqp_url
        self._handlers = dict(handlers)
        self._prefetch = prefetch
        # At most this many handlers run at once (default: the prefetch). An admission waits
        # unacked for a free handler, and is checked for expiry only once it has one.
        self._handlers_free = asyncio.Semaphore(max_in_flight or prefetch)
        self._on_record = on_record
        self._clock = clock
        self._name = name
        self._connection: AbstractConnection | None = None
        self._results_channel: AbstractChannel | None = None
        self._results: AbstractExchange | None = None
        self._reopening = asyncio.Lock()  # one task reopens a closed results channel, the others wait
        self._tasks: set[asyncio.Task[None]] = set()
        self._consuming: list[tuple[AbstractQueue, str]] = []
        self._connected = asyncio.Event()  # set while a connection is up, its exchange and consumers ready
        self._lost = asyncio.Event()  # the current connection closed
        self._taking = False  # consume ready queues (from start until stop)
        self._closing = False  # stop or abort: a closed connection is not replaced
        self._reconnecting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._taking, self._closing = True, False
        await self._connect()
        self._reconnecting = asyncio.create_task(self._stay_connected(), name=f"{self._name}-reconnect")

    async def _connect(self) -> None:
        connection = await aio_pika.connect(self._url, client_properties={"connection_name": self._name})
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        try:
            channel, results = await topology.await_exchange(
                connection, topology.RESULTS_EXCHANGE, confirms=True
            )
            consuming = []
            for dependency in self._handlers if self._taking else ():
                _, queue = await topology.await_queue(
                    connection, topology.ready_queue(dependency), prefetch=self._prefetch
                )
                consuming.append((queue, await queue.consume(self._on_message)))
        except BaseException:
            await connection.close()
            raise
        self._connection, self._results_channel, self._results = connection, channel, results
        self._consuming, self._lost = consuming, lost
        self._connected.set()

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
                except _LOST as exc:
                    log.warning("%s: reconnecting failed (%r); again in %.1f s", self._name, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, RECONNECT_MAX_DELAY)

    async def stop(self) -> None:
        """Stop taking work, let running handlers finish and report (over a new connection if the
        broker connection is lost meanwhile), then disconnect."""
        if self._connection is None:
            return
        # Stop deliveries first; deliveries already in flight may still start handlers.
        self._taking = False
        await asyncio.gather(*(queue.cancel(tag) for queue, tag in self._consuming), return_exceptions=True)
        self._consuming.clear()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
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

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        arrived = self._clock()
        await self._handlers_free.acquire()
        try:
            started = await self._take(message, arrived)
        except BaseException:
            self._handlers_free.release()
            raise
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
        if now >= job.expires_at:
            # Too late to start: hand the admission back to Janus unstarted.
            await self._settle(message, ack=False)
            self._record(job, received, None, None, "expired")
            return False
        if not await self._settle(message, ack=True):
            return False  # its connection is gone: the broker gives the admission to a consumer again
        task = asyncio.create_task(self._work(job, received))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._handlers_free.release())
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
        handler = self._handlers[job.dependency]
        now = self._clock()
        started: float | None = now
        error: str | None = None
        retry_after: float | None = None
        try:
            if now >= job.expires_at:
                # The ack took us past expires_at (a stalled event loop): starting now would break
                # the rate promise. Acked, it cannot be handed back: report it failed, unstarted.
                started, error = None, "not started: the admission expired while it was being taken"
            elif job.lease_expires_at is not None:
                budget = job.lease_expires_at - LEASE_SAFETY - now
                await asyncio.wait_for(handler(job), timeout=max(budget, 0.0))
            else:
                await handler(job)
        except RetryAfter as exc:
            error, retry_after = str(exc), exc.seconds
        except TimeoutError:
            error = "handler did not finish within the lease"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        finished = self._clock() if started is not None else None
        outcome: Literal["success", "failure"] = "success" if error is None else "failure"
        self._record(job, received, started, finished, outcome, error)
        body = encode_result(
            job_id=job.job_id, attempt=job.attempt, outcome=outcome, error=error, retry_after=retry_after
        )
        await self._report(job, body)

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
            delay = min(2 * delay, RECONNECT_MAX_DELAY)
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
                )
            )
