"""The Node.js example (examples/node) end to end against a real `janus run`: its producer
submits the jobs, its worker runs them (some fail first and are retried) under a rate limit
and a concurrency limit; half-way the broker closes the worker's connection, the worker opens
it again and runs the second half over it. The worker's own records (one JSON line per
admission it saw) show every job succeeded once, concurrency held and starts per rate window
held."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from janus.audit import audit_database
from janus.broker import topology
from janus.client import Producer, WorkRecord
from janus.config import load_config
from janus.protocol import CONTENT_TYPE
from tests.integration.harness import (
    close_connections_named,
    job_rows,
    make_config,
    policies,
    running_janus,
    wait_for_states,
)
from tests.node_example import PRODUCER, WORKER, node_example
from tests.system.janus_process import JanusProcess

pytestmark = pytest.mark.system

# Both limits bind in turn: 3 handlers of 20–120 ms could run over 30 calls a second, the
# rate allows 10.
CONFIG = """
database_url = "{database}"
amqp_url = "{amqp}"

[dependencies.api]
rate_limits = ["10/1s"]
concurrency = 3
lease_timeout = "5s"
admission_ttl = "0.3s"

[dependencies.api.retry]
base_delay = "0.1s"
max_delay = "0.3s"
max_attempts = 5
budget = 1.0  # a third of the jobs fail first: retries must not wait on the budget

[dependencies.api.circuit]
enabled = false  # nor on an open circuit
"""
JOBS = 40


def planned_failures(i: int) -> int:
    """How many tries of job i fail before one succeeds (the example handler's `fail_first`)."""
    return 2 if i % 7 == 0 else 1 if i % 3 == 0 else 0


def jobs() -> list[dict[str, Any]]:
    return [
        {
            "job_id": f"job-{i}",
            "dependency": "api",
            "scope": f"tenant-{i % 3}",
            "payload": {"work_ms": 20 + (i * 37) % 100, "fail_first": planned_failures(i)},
        }
        for i in range(JOBS)
    ]


def read_records(path: Path) -> list[WorkRecord]:
    """The worker's records: whole lines only (one may be half-written while it runs)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        entry.pop("lease_expires_at", None)
        records.append(WorkRecord(**entry))
    return records


async def wait_for_records(
    path: Path, done: Callable[[list[WorkRecord]], bool], worker: asyncio.subprocess.Process, timeout: float
) -> list[WorkRecord]:
    """Poll the records file (a file sends no events) until `done`, failing early if the worker exits."""
    async with asyncio.timeout(timeout):
        while True:
            records = read_records(path)
            if done(records):
                return records
            assert worker.returncode is None, "the Node worker exited"
            await asyncio.sleep(0.1)


class WorkerLog:
    """The worker's stderr, line by line, with a way to wait for a line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read(process))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, text: str, timeout: float) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: any(text in line for line in self.lines))

    async def done(self) -> None:
        await self._reader

    def text(self) -> str:
        return "\n".join(self.lines)


async def produce(env: dict[str, str], batch: list[dict[str, Any]]) -> None:
    """Submit `batch` with the Node producer; every job must be published."""
    producer = await asyncio.create_subprocess_exec(
        "node",
        str(PRODUCER),
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    lines = "".join(json.dumps(job) + "\n" for job in batch).encode()
    out, err = await asyncio.wait_for(producer.communicate(lines), timeout=60)
    assert producer.returncode == 0, err.decode()
    assert json.loads(out) == {"published": len(batch), "failed": []}


async def test_the_node_producer_and_worker_run_every_job_once_within_the_limits(
    database: str, vhost: str, tmp_path: Path, janus_process: Callable[[Path, str], JanusProcess]
) -> None:
    node_example()
    config_path = tmp_path / "janus.toml"
    config_path.write_text(CONFIG.format(database=database, amqp=vhost))
    config = load_config(config_path, env={})
    janus = janus_process(config_path, "janus")
    await janus.start()
    await janus.wait_leading()

    records_path = tmp_path / "records.jsonl"
    env = {
        **os.environ,
        "JANUS_AMQP_URL": vhost,
        "JANUS_DEPENDENCIES": "api",
        "JANUS_HANDLER": "example",
        "JANUS_RECORDS": str(records_path),
        # More handlers than the concurrency limit: Janus's limit is what must hold.
        "JANUS_MAX_IN_FLIGHT": "8",
    }
    worker = await asyncio.create_subprocess_exec(
        "node", str(WORKER), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    log = WorkerLog(worker)
    expected = {job["job_id"] for job in jobs()}

    def succeeded(count: int) -> Callable[[list[WorkRecord]], bool]:
        return lambda records: len({r.job_id for r in records if r.outcome == "success"}) >= count

    try:
        await produce(env, jobs()[: JOBS // 2])
        await wait_for_records(records_path, succeeded(JOBS // 4), worker, timeout=120)
        # Handlers still running go on and report over the next connection; deliveries not
        # started go back to the queue. The second half is published once the worker is back,
        # so that it runs over the new connection.
        assert await close_connections_named('{"connection_name","janus-node-worker"}', vhost=vhost) == 1
        await log.wait_for("connected again", timeout=60)
        await produce(env, jobs()[JOBS // 2 :])
        await wait_for_records(records_path, succeeded(JOBS), worker, timeout=120)
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), timeout=30)
        await log.done()
    assert worker.returncode == 0, log.text()
    assert "connection lost" in log.text()
    await janus.terminate()

    records = read_records(records_path)
    report = await audit_database(records, policies(config), database, expected_jobs=expected)
    assert report.ok, report.summary()
    assert Counter(r.job_id for r in records if r.outcome == "success") == Counter(expected)
    # Every planned failure was a try of its own, retried by Janus: none lost, none extra.
    failures = Counter(r.job_id for r in records if r.outcome == "failure")
    assert failures == Counter({f"job-{i}": planned_failures(i) for i in range(JOBS) if planned_failures(i)})
    api = report.dependencies["api"]
    # The limits were reached, so that holding them meant something.
    assert api.worst_concurrency == 3, report.summary()
    assert api.worst_rate["10/1s"] == 10, report.summary()


async def test_the_node_worker_drops_a_redelivered_copy_of_an_admission_it_started(
    database: str, vhost: str, tmp_path: Path
) -> None:
    """An ack the broker never read (its connection closed first) brings an admission back,
    flagged redelivered, although the worker started it (a full run once saw it start twice).
    Made for real: the test holds Janus's delivery unacked, puts a copy in the ready queue for
    the worker to start, then closes its channel so that the broker redelivers the original.
    The worker must drop it: started again, the job would run twice."""
    node_example()
    config = make_config(database, vhost, {"api": {"lease_timeout": "30s", "admission_ttl": "5s"}})
    starts = tmp_path / "starts.jsonl"
    env = {
        **os.environ,
        "JANUS_AMQP_URL": vhost,
        "JANUS_DEPENDENCIES": "api",
        "JANUS_HANDLER": "conformance",
        "JANUS_CONFORMANCE_LOG": str(starts),
    }
    async with running_janus(config), await aio_pika.connect(vhost) as connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.ready_queue("api"), ensure=True)
        taken: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        consumer = await queue.consume(taken.put)
        async with await Producer.connect(vhost) as producer:
            await producer.submit("once", "api", {"conformance": {"sleep": 3}})
        async with asyncio.timeout(20):
            original = await taken.get()
        await queue.cancel(consumer)  # the original stays unacked on this channel
        ready_exchange = await channel.get_exchange(topology.READY_EXCHANGE, ensure=True)
        await ready_exchange.publish(
            aio_pika.Message(original.body, content_type=CONTENT_TYPE), routing_key="api"
        )
        worker = await asyncio.create_subprocess_exec(
            "node", str(WORKER), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        log = WorkerLog(worker)
        try:
            async with asyncio.timeout(20):
                while True:  # a file sends no events
                    if starts.exists():
                        break
                    await asyncio.sleep(0.05)
            await channel.close()  # the unacked original goes back, flagged redelivered
            await log.wait_for("delivered again after its ack was lost", timeout=20)
            await wait_for_states(
                database, lambda rows: rows.get("once", {"state": ""})["state"] == "succeeded", 20
            )
        finally:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
            await asyncio.wait_for(worker.wait(), timeout=30)
            await log.done()
    assert len(starts.read_text().splitlines()) == 1, log.text()
    rows = await job_rows(database)
    assert (rows["once"]["state"], rows["once"]["failures"]) == ("succeeded", 0)
