"""What sits between the benchmarks' producer and workers: a relay (bare or durable) or Janus,
and how a benchmark tells that one has taken in every result."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import aio_pika
import asyncpg

from benchmarks._processes import BenchmarkError, Child
from janus.broker import topology

DEPENDENCY = "bench"
POLL_EVERY = 0.02


class Coordinator(Protocol):
    """What sits between the producer and the workers: the relay or Janus."""

    child: Child
    database: str | None  # the database it writes to, if any

    async def caught_up(self, results: int, timeout: float) -> None:
        """Return once the coordinator has taken in `results` results in all."""


async def _count_until(database_url: str, query: str, results: int, timeout: float, who: str) -> None:
    """Poll `query` (a count) until it reaches `results`, or fail after `timeout`."""
    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            done = int(await connection.fetchval(query))
            if done >= results:
                return
            if time.monotonic() >= deadline:
                raise BenchmarkError(f"{who} recorded {done} of {results} results")
            await asyncio.sleep(POLL_EVERY)
    finally:
        await connection.close()


class RelayCoordinator:
    """`database` (its URL, its name): a durable relay (benchmarks.relay --database-url)."""

    def __init__(self, child: Child, amqp_url: str, database: tuple[str, str] | None = None) -> None:
        self.child = child
        self.database: str | None = None if database is None else database[1]
        self._database_url = None if database is None else database[0]
        self._url = amqp_url

    async def caught_up(self, results: int, timeout: float) -> None:
        if self._database_url is not None:
            # The durable relay acks a result once its row is committed: count the rows.
            query = "SELECT count(*) FROM relay_jobs WHERE state = 'succeeded'"
            await _count_until(self._database_url, query, results, timeout, "the durable relay")
            return
        # The bare relay keeps no record: caught up when nothing waits in its queues.
        connection = await aio_pika.connect(self._url, client_properties={"connection_name": "bench-probe"})
        async with connection:
            channel = await connection.channel()
            deadline = time.monotonic() + timeout
            while True:
                waiting = 0
                for name in (
                    topology.INTAKE_QUEUE,
                    topology.ready_queue(DEPENDENCY),
                    topology.results_queue(DEPENDENCY),
                ):
                    queue = await channel.declare_queue(name, passive=True)
                    waiting += queue.declaration_result.message_count or 0
                if waiting == 0:
                    return
                if time.monotonic() >= deadline:
                    raise BenchmarkError(f"the relay left {waiting} messages in its queues")
                await asyncio.sleep(POLL_EVERY)


class JanusCoordinator:
    def __init__(self, child: Child, database_url: str, database: str) -> None:
        self.child = child
        self.database: str | None = database
        self._url = database_url

    async def caught_up(self, results: int, timeout: float) -> None:
        # Caught up when every result is committed: Janus's own definition of done.
        query = "SELECT count(*) FROM janus.jobs WHERE state = 'succeeded'"
        await _count_until(self._url, query, results, timeout, "Janus")
