"""The durable relay (benchmarks/relay.py --database-url), the latency benchmark's floor for a
coordinator that commits before it publishes: it must really commit each job before the
worker can see it, record each result, and publish nothing it could not commit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from benchmarks.relay import APPLICATION_NAME
from janus.broker import topology
from janus.client import Producer, Worker
from janus.client.worker import ReadyJob
from tests.integration.harness import queue_depth

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPENDENCY = "durable"
JOBS = 20


async def _start_relay(amqp_url: str, database_url: str) -> asyncio.subprocess.Process:
    relay = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.relay",
        "--amqp-url",
        amqp_url,
        "--dependency",
        DEPENDENCY,
        "--database-url",
        database_url,
        cwd=ROOT,
        env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert relay.stdout is not None
    assert await asyncio.wait_for(relay.stdout.readline(), 60) == b"ready\n"
    return relay


@pytest.fixture
async def connection(database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database)
    yield connection
    await connection.close()


async def test_each_job_is_committed_before_the_worker_sees_it_and_its_result_recorded(
    vhost: str, database: str, connection: asyncpg.Connection
) -> None:
    relay = await _start_relay(vhost, database)
    seen_as: dict[str, str | None] = {}
    lock = asyncio.Lock()  # one connection, and handlers may run at once
    all_seen = asyncio.Event()

    async def work(job: ReadyJob) -> None:
        # Read from another session: only a committed row is visible here.
        async with lock:
            seen_as[job.job_id] = await connection.fetchval(
                "SELECT state FROM relay_jobs WHERE job_id = $1", job.job_id
            )
        if len(seen_as) == JOBS:
            all_seen.set()

    try:
        async with Worker(vhost, {DEPENDENCY: work}), await Producer.connect(vhost) as producer:
            for number in range(JOBS):
                await producer.submit(f"job-{number}", DEPENDENCY)
            await asyncio.wait_for(all_seen.wait(), timeout=60)
        assert seen_as == {f"job-{number}": "admitted" for number in range(JOBS)}
        # Polled: the rows are written by the other process, which has no signal to give.
        async with asyncio.timeout(30):
            while True:
                query = "SELECT count(*) FROM relay_jobs WHERE state = 'succeeded'"
                if await connection.fetchval(query) == JOBS:
                    break
                await asyncio.sleep(0.05)
        relay.send_signal(signal.SIGTERM)
        assert relay.stdout is not None
        counters = json.loads(await asyncio.wait_for(relay.stdout.readline(), 30))
        assert counters == {"forwarded": JOBS, "results": JOBS}
        assert await asyncio.wait_for(relay.wait(), 30) == 0
    finally:
        if relay.returncode is None:
            relay.kill()
        await relay.wait()
    states = await connection.fetch("SELECT job_id, state, updated_at FROM relay_jobs")
    assert {row["job_id"]: row["state"] for row in states} == {f"job-{n}": "succeeded" for n in range(JOBS)}


async def test_with_its_database_gone_the_relay_publishes_nothing_and_exits(
    vhost: str, database: str, connection: asyncpg.Connection
) -> None:
    relay = await _start_relay(vhost, database)
    try:
        ended = await connection.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            APPLICATION_NAME,
        )
        assert ended == 1
        async with await Producer.connect(vhost) as producer:
            for number in range(3):
                await producer.submit(f"lost-{number}", DEPENDENCY)
        # Its first write fails: it stops rather than forward what it could not record.
        assert await asyncio.wait_for(relay.wait(), 30) != 0
    finally:
        if relay.returncode is None:
            relay.kill()
        await relay.wait()
    assert await queue_depth(vhost, topology.ready_queue(DEPENDENCY)) == 0
    # Unacked, the jobs went back to the intake for a coordinator that can record them.
    assert await queue_depth(vhost, topology.INTAKE_QUEUE) == 3
