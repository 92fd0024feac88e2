"""A worker that follows the protocol by construction.

For each admission: ack it *before* starting (so the broker never redelivers
work that may have started); refuse it unstarted if it has expired; run the
handler, cutting it off before the lease ends; publish exactly one result.

Handlers are coroutine functions, or plain functions, which run on threads of the
worker's own (`max_in_flight` threads: see `_Threads`). A coroutine past its lease is
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
import concurrent.futures
import contextlib
import inspect
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
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
from aio_pika.exceptions import ChannelNotFoundEntity

from janus.broker import BROKER_ERRORS, topology
from janus.broker.connection import connect
from janus.errors import BrokerError, ProtocolError, TopologyMissing
from janus.protocol import CONTENT_TYPE, ReadyMessage, decode_ready, encode_result
from janus.urls import redact

log = logging.getLogger("janus.worker")

# Finish (and report) this long before the lease ends, so Janus never frees a slot
# that this worker still uses.
LEASE_SAFETY = 0.1
CONNECT_TIMEOUT = 30.0  # seconds to reach RabbitMQ and find the ready queues (Janus declares them)


class RetryAfter(Exception):
    """Raise from a handler when the dependency asked to back off (e.g. HTTP 429 Retry-After):
    the attempt failed, and Janus admits nothing of the dependency for `seconds`."""

    def __init__(self, seconds: float, message: str = "") -> None:
        super().__init__(message or f"retry after {seconds:g}s")
        self.seconds = seconds


class Throttled(Exception):
    """Raise from a handler when the dependency refused the call for load (HTTP 429 or 503),
    with its Retry-After if it gave one: the attempt failed, and the result says `throttled`
    (reserved: Janus does not act on it yet; docs/protocol.md). With `retry_after`, Janus
    pauses the dependency as for RetryAfter."""

    def __init__(self, retry_after: float | None = None, message: str = "") -> None:
        super().__init__(message or "throttled" + (f", retry after {retry_after:g}s" if retry_after else ""))
        self.retry_after = retry_after


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
    try_number: int | None = None  # the job's try in its current life, if Janus said (ReadyJob)


# A coroutine function, or a plain function (run on the worker's threads); what it returns is ignored.
Handler = Callable[[ReadyJob], object]


def is_coroutine_function(handler: object) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 -- an object whose __call__ is async
    )


class _Threads:
    """A fixed pool of daemon threads for plain functions.

    Not concurrent.futures.ThreadPoolExecutor: its threads are joined at interpreter exit, so
    one function stuck past its lease (which nothing can kill) would keep a drained worker
    process from ever exiting. Started on first use."""

    def __init__(self, size: int, name: str) -> None:
        self._size, self._name = size, name
        self._work: queue.SimpleQueue[tuple[Callable[[], object], concurrent.futures.Future[object]] | None]
        self._work = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, call: Callable[[], object]) -> concurrent.futures.Future[object]:
        if not self._threads:
            for index in range(self._size):
                thread = threading.Thread(target=self._serve, name=f"{self._name}-{index}", daemon=True)
                thread.start()
                self._threads.append(thread)
        future: concurrent.futures.Future[object] = concurrent.futures.Future()
        self._work.put((call, future))
        return future

    def _serve(self) -> None:
        while (item := self._work.get()) is not None:
            call, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def close(self) -> None:
        """Idle threads end; one still running a function ends with it (or with the process)."""
        for _ in self._threads:
            self._work.put(None)
        self._threads.clear()


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
        self._threads = _Threads(self._max_in_flight, f"{name}-thread")
        self._on_record = on_record
        self._clock = clock
        self._name = name
        self._connect_timeout = connect_timeout
        self._connection: AbstractConnection | None = None
        self._results: AbstractExchange | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._channel: AbstractChannel | None = None  # consuming, every dependency
        self._consuming: list[tuple[AbstractQueue, str]] = []
        self._stopping = False
        self._taking = 0  # deliveries with a handler slot, not yet started as a task
        self._settled = asyncio.Event()  # set when _taking drops to 0
        self.running = 0  # handlers started and not finished
        self.overrunning = 0  # plain functions past their lease, still running (reported failed)

    async def start(self) -> None:
        """Connect and consume; waits up to `connect_timeout` for Janus to declare the ready queues.

        Raises ConnectionSettingsError, BrokerError, or TopologyMissing (a dependency Janus has
        never run with on this vhost)."""
        self._connection = await connect(self._url, name=self._name, timeout=self._connect_timeout)
        try:
            _, self._results = await topology.await_exchange(
                self._connection, topology.RESULTS_EXCHANGE, confirms=True, timeout=self._connect_timeout
            )
            for dependency in self._handlers:
                await self._await_ready_queue(dependency)
            # One channel for every dependency: its prefetch bounds the admissions this worker
            # holds untaken, all dependencies together, as max_in_flight bounds those it runs.
            channel = self._channel = await self._connection.channel()
            await channel.set_qos(prefetch_count=self._prefetch)
            for dependency in self._handlers:
                queue = await channel.get_queue(topology.ready_queue(dependency), ensure=True)
                self._consuming.append((queue, await queue.consume(self._on_message)))
        except BaseException:
            await self.abort()
            raise

    async def _await_ready_queue(self, dependency: str) -> None:
        assert self._connection is not None
        name = topology.ready_queue(dependency)
        try:
            probe, _ = await topology.await_queue(self._connection, name, timeout=self._connect_timeout)
        except ChannelNotFoundEntity:
            raise TopologyMissing(
                f"no queue {name!r} on {redact(self._url)}: Janus has never run with dependency "
                f"{dependency!r} on this vhost"
            ) from None
        except BROKER_ERRORS as exc:
            raise BrokerError(f"cannot reach {name!r}: {exc!r}") from exc
        await probe.close()

    def disconnected(self) -> Awaitable[Any]:
        """Done when the connection to RabbitMQ closes (for whoever runs the worker)."""
        assert self._connection is not None, "not started"
        return self._connection.closed()

    async def stop(self) -> None:
        """Stop taking work, let running handlers finish and report, then disconnect.

        Admissions delivered but not started go back to the queue unstarted (the consuming
        channel closes: the broker requeues what was not acked), for another worker or, once
        they expire, back to Janus, at no attempt's cost."""
        if self._connection is None:
            return
        self._stopping = True
        await asyncio.gather(*(queue.cancel(tag) for queue, tag in self._consuming), return_exceptions=True)
        self._consuming.clear()
        if self._channel is not None:
            with contextlib.suppress(*BROKER_ERRORS):
                await self._channel.close()
        while self._tasks or self._taking:
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
        await self._connection.close()
        self._connection = None
        self._threads.close()

    async def abort(self) -> None:
        """Disconnect at once, as a crashed worker would: running handlers are cancelled unreported."""
        for task in self._tasks:
            task.cancel()
        self._consuming.clear()
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
        await self._handlers_free.acquire()
        if self._stopping:  # its channel is closing: the broker puts it back, unstarted
            self._handlers_free.release()
            return
        self._taking += 1
        try:
            started = await self._take(message)
        except BaseException:
            self._handlers_free.release()
            raise
        finally:
            self._taking -= 1
            if not self._taking:
                self._settled.set()
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
        started = self._clock()
        error: str | None = None
        retry_after: float | None = None
        throttled = False
        budget = job.lease_expires_at - LEASE_SAFETY - started if job.lease_expires_at is not None else None
        timeout = max(budget, 0.0) if budget is not None else None
        running: asyncio.Future[object] | None = None
        self.running += 1
        try:
            running = self._start(job)
            if self._async[job.dependency]:
                await asyncio.wait_for(running, timeout)  # cancelled at the cut-off, and awaited
            else:
                await asyncio.wait_for(asyncio.shield(running), timeout)  # a thread runs on regardless
        except RetryAfter as exc:
            error, retry_after = str(exc), exc.seconds
        except Throttled as exc:
            error, retry_after, throttled = str(exc), exc.retry_after, True
        except TimeoutError:
            error = "handler did not finish within the lease"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self.running -= 1
        if running is not None and not running.done():  # a plain function's thread cannot be stopped
            self._overrun(running, slot)
            log.warning(
                "%s of %s: the function runs past its lease; reported failed, its result will be discarded",
                job.job_id,
                job.dependency,
            )
        finished = self._clock()
        outcome: Literal["success", "failure"] = "success" if error is None else "failure"
        self._record(job, received, started, finished, outcome, error)
        assert self._results is not None
        body = encode_result(
            job_id=job.job_id,
            attempt=job.attempt,
            outcome=outcome,
            error=error,
            retry_after=retry_after,
            throttled=throttled,
        )
        await self._results.publish(
            aio_pika.Message(body, content_type=CONTENT_TYPE, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            # Routed to this dependency's results queue; a worker user of another dependency may
            # not use this key (RabbitMQ topic permissions, docs/security.md).
            routing_key=job.dependency,
        )

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
