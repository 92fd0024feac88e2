"""Running Janus, producers and workers inside a test, and waiting on what workers saw."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import asyncpg

from janus.broker import topology
from janus.client.worker import ReadyJob, WorkRecord
from janus.config import JanusConfig, parse_config
from janus.core.policy import DependencyPolicy
from janus.service.app import Service
from janus.service.leadership import LeaseTimings
from janus.service.options import ServiceOptions

FAST_LEASE = LeaseTimings(lease=2.0, renew_every=0.3, poll_every=0.2)
# The end-to-end tests run with the queues of this type: JANUS_TEST_QUEUE_TYPE=quorum runs them
# against quorum queues (the default is the policy's default).
QUEUE_TYPE: topology.QueueType = (
    "quorum" if os.environ.get("JANUS_TEST_QUEUE_TYPE") == "quorum" else "classic"
)


def make_config(
    database: str, amqp: str, dependencies: dict[str, dict[str, Any]], **extra: Any
) -> JanusConfig:
    extra.setdefault("queue_type", QUEUE_TYPE)
    return parse_config(
        {"database_url": database, "amqp_url": amqp, "dependencies": dependencies, **extra}, env={}
    )


async def succeed(job: ReadyJob) -> None:
    """A handler whose every job succeeds at once."""


def policies(config: JanusConfig) -> dict[str, DependencyPolicy]:
    return {policy.name: policy for policy in config.policies()}


class RecordLog:
    """Worker records, with a way to wait (on a condition, with a deadline) for what they show."""

    def __init__(self) -> None:
        self.records: list[WorkRecord] = []
        self._changed = asyncio.Condition()

    def append(self, record: WorkRecord) -> None:
        self.records.append(record)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[list[WorkRecord]], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self.records))

    def succeeded(self) -> set[str]:
        return {r.job_id for r in self.records if r.outcome == "success"}


@asynccontextmanager
async def running_janus(
    config: JanusConfig, *, timings: LeaseTimings = FAST_LEASE, wait_leading: bool = True
) -> AsyncIterator[Service]:
    """Janus in this process; stopped (drained) at the end. Fails the test if it crashed."""
    # Workers often start after Janus here: it counts them more often than the default.
    options = ServiceOptions(timings=timings, serve_metrics=False, worker_poll_every=0.2)
    service = Service(config, options)
    task = asyncio.create_task(service.run(), name="janus")
    try:
        if wait_leading:
            waiter = asyncio.ensure_future(service.leading.wait())
            done, _ = await asyncio.wait({waiter, task}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()  # raises what killed it
            assert waiter in done, "Janus did not start leading in time"
        yield service
    finally:
        service.stop.set()
        await asyncio.wait_for(task, timeout=30)


async def eventually(predicate: Callable[[], bool], timeout: float, every: float = 0.05) -> None:
    """Poll until `predicate()` holds, for what has no event to await (a gauge, a file that
    another process writes); TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(every)


async def job_rows(database: str) -> dict[str, asyncpg.Record]:
    connection = await asyncpg.connect(database)
    try:
        rows = await connection.fetch("SELECT * FROM janus.jobs")
    finally:
        await connection.close()
    return {row["job_id"]: row for row in rows}


async def wait_for_states(
    database: str, predicate: Callable[[dict[str, asyncpg.Record]], bool], timeout: float
) -> dict[str, asyncpg.Record]:
    """Poll the job table until `predicate` holds (the table has no events to wait on)."""
    async with asyncio.timeout(timeout):
        while True:
            rows = await job_rows(database)
            if predicate(rows):
                return rows
            await asyncio.sleep(0.1)


@asynccontextmanager
async def stalled_consumer(amqp_url: str, dependency: str) -> AsyncIterator[None]:
    """A consumer of the dependency's ready queue that takes one admission and never acks it.

    Janus admits only to a ready queue something consumes (no_worker): with this one there, the
    other admissions wait in the queue until their admission TTL ends and come back unused.
    Closing it returns its one admission to the queue, where it has expired too."""
    connection = await aio_pika.connect(amqp_url, client_properties={"connection_name": "stalled"})
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1)
        queue = await channel.get_queue(topology.ready_queue(dependency), ensure=True)

        async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            """Never acked, never rejected."""

        await queue.consume(hold)
        yield
    finally:
        await connection.close()


async def janus_cli(
    *args: str, database: str | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run the `janus` command in a process of its own, as an operator would: its exit code,
    stdout and stderr. `database` becomes JANUS_DATABASE_URL."""
    extra = {**(env or {}), **({"JANUS_DATABASE_URL": database} if database is not None else {})}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "janus.cli",
        *args,
        env={**os.environ, **extra},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def close_connections_named(name: str, *, vhost: str | None = None) -> int:
    """Close, from the broker's side, every connection whose client properties name `name` (on
    `vhost` if given, an AMQP URL's vhost or a plain name), as a broker restart or a network cut
    would; fails if there is none. Returns how many it closed."""

    async def ctl(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        return out.decode()

    if vhost is not None and "://" in vhost:
        vhost = unquote(urlsplit(vhost).path[1:])
    listing = await ctl("list_connections", "-q", "--no-table-headers", "pid", "vhost", "client_properties")
    pids = [
        fields[0]
        for fields in (line.split("\t") for line in listing.splitlines())
        if len(fields) == 3 and name in fields[2] and vhost in (None, fields[1])
    ]
    assert pids, f"no connection named {name!r}:\n{listing}"
    for pid in pids:
        await ctl("close_connection", pid, "closed by the test")
    return len(pids)


async def queue_depth(amqp_url: str, queue: str) -> int:
    """The messages ready in `queue` now, as the broker counts them."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0
