"""Submitting jobs from code that is not async: a Django view, a script, a cron job.

`SyncProducer` runs the async `Producer` on an event loop of its own, in a daemon thread,
and waits for each confirm: one AMQP client and one set of checks for both, rather than
a second client library (docs/decisions.md). Calls are thread-safe; a process that forks
(gunicorn with preload, multiprocessing) must make its SyncProducer after the fork.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, TypeVar

from pydantic import JsonValue

from janus.client.producer import CONNECT_TIMEOUT, Producer
from janus.config import DEFAULT_AMQP_URL, secret_from_env
from janus.errors import BrokerError

T = TypeVar("T")

CONFIRM_TIMEOUT = 30.0  # seconds a submit waits for the broker's confirm


def default_amqp_url() -> str:
    """JANUS_AMQP_URL (or the file JANUS_AMQP_URL_FILE names), else the local broker."""
    return secret_from_env(os.environ, "amqp_url") or DEFAULT_AMQP_URL


class SyncProducer:
    """Publish jobs to janus.intake from plain (blocking) code, with confirms.

        with SyncProducer("amqp://guest:guest@127.0.0.1:5672/") as producer:
            producer.submit("order-42", "payments-api", {"order": 42}, scope="tenant-a")

    `submit` returns once the broker has confirmed the job, and raises what the async
    Producer raises: ProtocolError for a job Janus would set aside, BrokerError if the broker
    routed it nowhere, refused it or did not confirm it in time (submitting again is safe:
    Janus deduplicates by job_id)."""

    def __init__(
        self, amqp_url: str | None = None, *, name: str = "janus-producer", timeout: float = CONNECT_TIMEOUT
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"{name}-loop", daemon=True)
        self._thread.start()
        self._producer: Producer | None = None
        try:
            self._producer = self._call(
                Producer.connect(amqp_url or default_amqp_url(), name=name, timeout=timeout), timeout + 5.0
            )
        except BaseException:
            self._stop_loop()
            raise

    def submit(
        self,
        job_id: str,
        dependency: str,
        payload: JsonValue = None,
        *,
        scope: str = "default",
        timeout: float = CONFIRM_TIMEOUT,
        cost: float | None = None,
    ) -> None:
        self._call(self._open().submit(job_id, dependency, payload, scope=scope, cost=cost), timeout)

    def submit_many(
        self, jobs: Iterable[tuple[str, str, JsonValue, str]], *, timeout: float | None = None
    ) -> int:
        """Publish (job_id, dependency, payload, scope) tuples, many confirms in flight; how many."""
        return self._call(self._open().submit_many(list(jobs)), timeout)

    def close(self) -> None:
        if self._producer is None:
            return
        producer, self._producer = self._producer, None
        try:
            self._call(producer.close(), CONFIRM_TIMEOUT)
        finally:
            self._stop_loop()

    def __enter__(self) -> SyncProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _open(self) -> Producer:
        if self._producer is None:
            raise BrokerError("this SyncProducer is closed")
        return self._producer

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BrokerError(f"RabbitMQ did not answer within {timeout:g} s") from None

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def submit(
    job_id: str,
    dependency: str,
    payload: JsonValue = None,
    *,
    scope: str = "default",
    amqp_url: str | None = None,
    cost: float | None = None,
) -> None:
    """Publish one job and wait for its confirm, on a connection of its own (for scripts and
    occasional jobs; keep a SyncProducer open to submit many)."""
    with SyncProducer(amqp_url) as producer:
        producer.submit(job_id, dependency, payload, scope=scope, cost=cost)
