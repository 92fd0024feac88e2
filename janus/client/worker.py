"""A worker that follows the protocol by construction.

For each admission: ack it *before* starting (so the broker never redelivers
work that may have started); refuse it unstarted if it has expired; run the
handler, cancelling it before the lease ends; publish exactly one result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractExchange, AbstractIncomingMessage, AbstractQueue

from janus.broker import topology
from janus.errors import ProtocolError
from janus.protocol import CONTENT_TYPE, ReadyMessage, decode_ready, encode_result

log = logging.getLogger("janus.worker")

# Finish (and report) this long before the lease ends, so Janus never frees a slot
# that this worker still uses.
LEASE_SAFETY = 0.1


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
    received_at: float
    started_at: float | None  # None: refused because it had expired
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
        self._results: AbstractExchange | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._consuming: list[tuple[AbstractQueue, str]] = []

    async def start(self) -> None:
        self._connection = await aio_pika.connect(
            self._url, client_properties={"connection_name": self._name}
        )
        _, self._results = await topology.await_exchange(
            self._connection, topology.RESULTS_EXCHANGE, confirms=True
        )
        for dependency in self._handlers:
            _, queue = await topology.await_queue(
                self._connection, topology.ready_queue(dependency), prefetch=self._prefetch
            )
            self._consuming.append((queue, await queue.consume(self._on_message)))

    async def stop(self) -> None:
        """Stop taking work, let running handlers finish and report, then disconnect."""
        if self._connection is None:
            return
        # Stop deliveries first; deliveries already in flight may still start handlers.
        await asyncio.gather(*(queue.cancel(tag) for queue, tag in self._consuming), return_exceptions=True)
        self._consuming.clear()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._connection.close()
        self._connection = None

    async def abort(self) -> None:
        """Disconnect at once, as a crashed worker would: running handlers are cancelled unreported."""
        for task in self._tasks:
            task.cancel()
        self._consuming.clear()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        await self._handlers_free.acquire()
        try:
            started = await self._take(message)
        except BaseException:
            self._handlers_free.release()
            raise
        if not started:
            self._handlers_free.release()

    async def _take(self, message: AbstractIncomingMessage) -> bool:
        """Start the admission's handler (True), or hand the admission back unstarted (False)."""
        received = self._clock()
        try:
            job = decode_ready(message.body)
        except ProtocolError as exc:
            log.error("unreadable admission, returned to Janus: %s", exc)
            await message.reject(requeue=False)
            return False
        if received >= job.expires_at:
            # Too late to start: hand the admission back to Janus unstarted.
            await message.reject(requeue=False)
            self._record(job, received, None, None, "expired")
            return False
        await message.ack()
        task = asyncio.create_task(self._work(job, received))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._handlers_free.release())
        return True

    async def _work(self, job: ReadyJob, received: float) -> None:
        handler = self._handlers[job.dependency]
        started = self._clock()
        error: str | None = None
        retry_after: float | None = None
        try:
            if job.lease_expires_at is not None:
                budget = job.lease_expires_at - LEASE_SAFETY - started
                await asyncio.wait_for(handler(job), timeout=max(budget, 0.0))
            else:
                await handler(job)
        except RetryAfter as exc:
            error, retry_after = str(exc), exc.seconds
        except TimeoutError:
            error = "handler did not finish within the lease"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        finished = self._clock()
        outcome: Literal["success", "failure"] = "success" if error is None else "failure"
        self._record(job, received, started, finished, outcome, error)
        assert self._results is not None
        body = encode_result(
            job_id=job.job_id, attempt=job.attempt, outcome=outcome, error=error, retry_after=retry_after
        )
        await self._results.publish(
            aio_pika.Message(body, content_type=CONTENT_TYPE, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            # Routed to this dependency's results queue; a worker user of another dependency may
            # not use this key (RabbitMQ topic permissions, docs/security.md).
            routing_key=job.dependency,
        )

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
