"""Workers that crash, hang, never ack, never report or purge their queue; messages that make a tick fail.

Each is measured from the workers' side (janus.audit): a misbehaving worker's hold on an
admission counts, in the audit, until the admission's lease ends (the protocol's bound:
Janus frees the slot then, not before), and the healthy worker's records are its own, on
the same clock.
Nothing may be lost, no limit exceeded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage

from janus.audit import audit
from janus.broker import topology
from janus.client import Producer, ReadyJob, Worker
from janus.client.worker import WorkRecord
from janus.core.jobs import Admission
from janus.protocol import decode_ready, encode_ready
from tests.integration.harness import (
    QUEUE_TYPE,
    RecordLog,
    job_rows,
    make_config,
    policies,
    running_janus,
    succeed,
)

pytestmark = pytest.mark.integration

JOBS = [f"job-{i}" for i in range(6)]
POLICY = {
    "concurrency": 2,
    "rate_limits": ["20/1s"],
    "admission_ttl": "0.5s",
    "lease_timeout": "1.5s",
    "retry": {"base_delay": "0.1s", "max_delay": "0.2s", "max_attempts": 5},
}


class Misbehaving:
    """A raw consumer of the ready queue that breaks the worker's duty in one way."""

    def __init__(self, amqp_url: str, behaviour: str) -> None:
        self.url = amqp_url
        self.behaviour = behaviour
        self.taken: list[tuple[ReadyJob, float]] = []  # (admission, when it reached this worker)
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.hung: list[asyncio.Task[None]] = []
        self._took = asyncio.Event()

    async def start(self) -> None:
        self.connection = await aio_pika.connect(
            self.url, client_properties={"connection_name": "misbehaving"}
        )
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=POLICY["concurrency"])  # type: ignore[arg-type]
        queue = await channel.get_queue(topology.ready_queue("api"), ensure=True)
        if self.behaviour == "purges its queue":
            # Janus admits only to a queue something consumes: this one consumes too, on a
            # channel that takes one admission and never acks it, and purges the rest.
            self._queue = queue
            holding = await self.connection.channel()
            await holding.set_qos(prefetch_count=1)
            held = await holding.get_queue(topology.ready_queue("api"), ensure=True)
            await held.consume(self._on_message)
            return
        await queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        received = time.time()
        if self.behaviour not in ("never acks", "purges its queue"):  # unacked: it cannot expire in the queue
            await message.ack()  # before `taken` shows it: a crash after this is mid-job
        self.taken.append((decode_ready(message.body), received))
        self._took.set()
        if self.behaviour in ("never acks", "purges its queue"):
            return
        if self.behaviour == "hangs forever":
            # Never reports, stays connected (in a task of its own: the delivery callback returns).
            self.hung.append(asyncio.create_task(asyncio.Event().wait()))
        # "crashes mid-job" disconnects below; "never reports" simply returns.

    async def took(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(self.taken) < count:
                self._took.clear()
                await self._took.wait()

    async def purge_until(self, count: int, timeout: float) -> None:
        """Purge the ready queue until `count` admissions have been destroyed that way."""
        purged = 0
        async with asyncio.timeout(timeout):
            while purged < count:
                result = await self._queue.purge()
                purged += result.message_count or 0
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for task in self.hung:
            task.cancel()
        if self.connection is not None:
            await self.connection.close()
            self.connection = None

    def records(self) -> list[WorkRecord]:
        """What this worker held, as the audit counts it: from its admission until its lease ends.

        Both ends on Janus's clock: Janus frees the slot at the lease's end, not before."""
        records = []
        for job, received in self.taken:
            if self.behaviour in ("never acks", "purges its queue"):
                continue  # never started
            assert job.lease_expires_at is not None
            records.append(
                WorkRecord(
                    job_id=job.job_id,
                    dependency=job.dependency,
                    scope=job.scope,
                    attempt=job.attempt,
                    admitted_at=job.admitted_at,
                    expires_at=job.expires_at,
                    received_at=received,
                    started_at=job.admitted_at,
                    finished_at=job.lease_expires_at,
                    outcome="failure",
                    error="misbehaved",
                )
            )
        return records


@pytest.mark.parametrize(
    "behaviour", ["crashes mid-job", "hangs forever", "never acks", "never reports", "purges its queue"]
)
async def test_a_misbehaving_worker_loses_nothing_and_breaks_no_limit(
    database: str, vhost: str, behaviour: str
) -> None:
    config = make_config(database, vhost, {"api": POLICY})
    log = RecordLog()
    bad = Misbehaving(vhost, behaviour)

    async with running_janus(config) as service:
        await bad.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([(job_id, "api", None, "default") for job_id in JOBS])
        if behaviour == "purges its queue":  # one slot held unacked, the other admission purged
            await bad.took(1, timeout=10)
            await bad.purge_until(POLICY["concurrency"] - 1, timeout=10)  # type: ignore[operator]
        else:
            await bad.took(POLICY["concurrency"], timeout=10)  # type: ignore[arg-type]
        if behaviour == "crashes mid-job":
            await bad.stop()
        # On Janus's clock, like the misbehaving worker's holds (which end at the lease deadline):
        # Janus's clock is the host's corrected to the database's, and under load that correction
        # can be off by more than a delivery takes, which would show an overlap that is not there.
        healthy = Worker(vhost, {"api": succeed}, on_record=log.append, clock=service.clock)
        await healthy.start()
        await log.wait_for(lambda _: log.succeeded() == set(JOBS), timeout=30)
        await bad.stop()  # a never-acking worker's deliveries come back now: expired, refused, stale
        await healthy.stop()
        rows = await job_rows(database)
        admissions = await admission_times(database)

    records = [*log.records, *bad.records()]
    report = audit(records, policies(config), expected_jobs=JOBS)
    assert report.ok, report.summary()
    assert report.dependencies["api"].worst_concurrency <= 2
    assert {row["state"] for row in rows.values()} == {"succeeded"}
    # The jobs the misbehaving worker held (or destroyed) were retried once their lease ended.
    held = {job.job_id for job, _ in bad.taken} | {job_id for job_id, row in rows.items() if row["failures"]}
    assert len(held) >= 2, "the misbehaving worker took both slots"
    for job_id in held:
        assert rows[job_id]["failures"] >= 1, job_id
        times = admissions[job_id]
        assert len(times) >= 2, job_id
        assert times[-1] - times[0] >= 1.5, "re-admitted no sooner than the lease allows"


async def admission_times(database: str) -> dict[str, list[float]]:
    connection = await asyncpg.connect(database)
    try:
        rows = await connection.fetch("SELECT job_id, admitted_at FROM janus.admissions ORDER BY attempt")
    finally:
        await connection.close()
    times: dict[str, list[float]] = {}
    for row in rows:
        times.setdefault(row["job_id"], []).append(row["admitted_at"])
    return times


async def test_the_sdk_worker_never_starts_an_expired_admission(vhost: str) -> None:
    """Delivered late, or waiting for a free handler past `expires_at`: refused unstarted, dead-lettered."""
    connection = await aio_pika.connect(vhost)
    await topology.declare_topology(connection, ["api"], queue_type=QUEUE_TYPE)
    channel = await connection.channel(publisher_confirms=True)
    ready = await channel.get_exchange(topology.READY_EXCHANGE, ensure=True)
    returned = await channel.get_queue(topology.RETURNED_QUEUE, ensure=True)
    started: list[str] = []
    release = asyncio.Event()

    async def handler(job: ReadyJob) -> None:
        started.append(job.job_id)
        if job.job_id == "blocker":
            await release.wait()

    log = RecordLog()
    worker = Worker(vhost, {"api": handler}, on_record=log.append, prefetch=5, max_in_flight=1)
    await worker.start()
    now = time.time()

    async def admit(job_id: str, expires_at: float) -> None:
        body = encode_ready(
            Admission(
                job_id=job_id,
                dependency="api",
                scope="default",
                payload=None,
                attempt=1,
                admitted_at=now,
                expires_at=expires_at,
                lease_deadline=now + 60,
            )
        )
        await ready.publish(aio_pika.Message(body, content_type="application/json"), routing_key="api")

    await admit("already-expired", now - 0.001)
    await admit("blocker", now + 30)
    await log.wait_for(lambda records: [r.job_id for r in records] == ["already-expired"], timeout=10)
    await asyncio.sleep(0)  # let the blocker start
    await admit("expires-while-waiting", time.time() + 0.3)  # waits for the only handler
    await asyncio.sleep(0.6)
    release.set()
    await log.wait_for(lambda records: len(records) == 3, timeout=10)
    await worker.stop()
    assert started == ["blocker"]
    outcomes = {r.job_id: (r.outcome, r.started_at) for r in log.records}
    assert outcomes["already-expired"] == ("expired", None)
    assert outcomes["expires-while-waiting"] == ("expired", None)
    # Refused unstarted means dead-lettered back to Janus, which frees the slot.
    back = []
    async with asyncio.timeout(10):
        while len(back) < 2:
            message = await returned.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            back.append(decode_ready(message.body).job_id)
    assert sorted(back) == ["already-expired", "expires-while-waiting"]
    await connection.close()


@asynccontextmanager
async def poisoned(database: str) -> AsyncIterator[None]:
    """A trigger that makes PostgreSQL refuse any job whose id or last error says "poison":
    a statement failure tied to one message, as a bug or a data limit could cause."""
    connection = await asyncpg.connect(database)
    try:
        await connection.execute(
            """
            CREATE FUNCTION janus.test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.job_id LIKE 'poison%' OR NEW.last_error LIKE '%poison%' THEN
                    RAISE EXCEPTION 'poisoned job %', NEW.job_id;
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER test_poison BEFORE INSERT OR UPDATE ON janus.jobs
                FOR EACH ROW EXECUTE FUNCTION janus.test_poison();
            """
        )
        yield
    finally:
        await connection.close()


async def rejected_messages(
    vhost: str, count: int, timeout: float = 20
) -> list[tuple[bytes, dict[str, object]]]:
    connection = await aio_pika.connect(vhost)
    found: list[tuple[bytes, dict[str, object]]] = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.REJECTED_QUEUE, ensure=True)
        async with asyncio.timeout(timeout):
            while len(found) < count:
                message = await queue.get(no_ack=True, fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                found.append((message.body, dict(message.headers)))
    return found


async def test_a_message_that_fails_the_tick_is_retried_then_set_aside_and_the_rest_flows(
    database: str, vhost: str
) -> None:
    config = make_config(
        database,
        vhost,
        {
            "api": {
                "concurrency": 3,
                "lease_timeout": "1.5s",
                "admission_ttl": "0.5s",
                "retry": {"base_delay": "0.1s"},
            }
        },
    )
    log = RecordLog()

    async def fails_with_poison_once(job: ReadyJob) -> None:
        if job.job_id == "carrier" and job.attempt == 1:
            raise RuntimeError("this error is poison to the database")

    async with poisoned(database), running_janus(config) as service:
        worker = Worker(vhost, {"api": fails_with_poison_once}, on_record=log.append)
        await worker.start()
        good = [f"good-{i}" for i in range(20)]
        async with await Producer.connect(vhost) as producer:
            # Good jobs around the poison, published together so that they share its batch.
            await producer.submit_many(
                [(job_id, "api", None, "default") for job_id in good[:10]]
                + [("poison-1", "api", None, "default"), ("carrier", "api", None, "default")]
                + [(job_id, "api", None, "default") for job_id in good[10:]]
            )
        # The poisoned intake is set aside after its retries; the poisoned *result* (its error text
        # cannot be stored) too, and the job it reported on is retried once its lease ends.
        rejected = await rejected_messages(vhost, 2)
        await log.wait_for(lambda _: set(good) | {"carrier"} <= log.succeeded(), timeout=30)
        await worker.stop()
        registry = service.metrics.registry
        events = {"source": "result", "verdict": "succeeded"}
        async with asyncio.timeout(10):
            while True:  # the last results may still be on their way to Janus: poll the counter
                if (registry.get_sample_value("janus_job_events_total", events) or 0) >= 21:
                    break
                await asyncio.sleep(0.05)
        # Counted once though the failed ticks' messages were decided twice (then alone).
        assert registry.get_sample_value("janus_job_events_total", events) == 21
        failures = service.metrics.registry.get_sample_value("janus_tick_failures_total")
        assert service.leading.is_set(), "Janus kept leading"
    reasons = sorted(
        (headers[topology.SOURCE_HEADER], headers[topology.REASON_HEADER]) for _, headers in rejected
    )
    assert reasons == [("intake", "processing_failed"), ("results", "processing_failed")]
    assert failures is not None
    assert failures >= 2
    rows = await job_rows(database)
    assert "poison-1" not in rows
    assert set(rows) == set(good) | {"carrier"}
    assert rows["carrier"]["state"] == "succeeded"
    assert rows["carrier"]["failures"] == 1  # the lease ran out: its unrecordable report was set aside
    assert [r.job_id for r in log.records].count("poison-1") == 0
