"""What the broker never confirmed, after a kill -9 (issue 18): a leader killed between the commit
of a tick and its publishes. Outcomes: the next leader publishes them from the outbox.
Admissions: the next leader holds them until their leases end, then returns them without
charging an attempt (with max_attempts = 1, a charge would kill the job).

The kill comes from inside (`janus.service.faults`: the process SIGKILLs itself at that point),
since no outside signal can hit that moment reliably.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from janus.broker import topology
from janus.client import Producer, ReadyJob, Worker
from janus.protocol import decode_outcome
from janus.service.faults import ADMISSIONS_COMMITTED, CRASH_AT_ENV, OUTCOMES_COMMITTED
from tests.integration.harness import RecordLog, wait_for_states
from tests.system.janus_process import FAST_TIMINGS, JanusProcess

pytestmark = pytest.mark.system

CONFIG = """
database_url = "{database}"
amqp_url = "{amqp}"

[dependencies.api]
concurrency = 5
lease_timeout = "10s"
"""
JOBS = 40


async def outbox_rows(database: str) -> int:
    connection = await asyncpg.connect(database)
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM janus.outbox")
        return count
    finally:
        await connection.close()


async def test_outcomes_committed_before_a_kill_9_are_published_after_the_takeover(
    database: str, vhost: str, tmp_path: Path, janus_process: type[JanusProcess]
) -> None:
    config_path = tmp_path / "janus.toml"
    config_path.write_text(CONFIG.format(database=database, amqp=vhost))
    first = janus_process(config_path, "first", {**FAST_TIMINGS, CRASH_AT_ENV: OUTCOMES_COMMITTED})
    second = janus_process(config_path, "second", FAST_TIMINGS)
    await first.start()
    await first.wait_admitting(30)
    await second.start()  # the standby

    seen: Counter[tuple[str, str]] = Counter()
    changed = asyncio.Condition()

    async def on_outcome(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            outcome = decode_outcome(message.body)
            seen[outcome.job_id, outcome.outcome] += 1
            async with changed:
                changed.notify_all()

    async def ok(job: ReadyJob) -> None:
        await asyncio.sleep(0.01)

    expected = {(f"o-{i}", "succeeded") for i in range(JOBS)}
    log = RecordLog()
    subscriber = await aio_pika.connect(vhost)
    worker = Worker(vhost, {"api": ok}, on_record=log.append)
    try:
        channel = await subscriber.channel()
        exchange = await channel.get_exchange(topology.OUTCOMES_EXCHANGE, ensure=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="api.*")
        await queue.consume(on_outcome)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([(f"o-{i}", "api", None, "default") for i in range(JOBS)], window=50)
        assert first.process is not None
        code = await asyncio.wait_for(first.process.wait(), 30)
        assert code == -9, first.output()  # it killed itself after committing finished jobs
        await first.wait_line("fault injection: killing this process at outcomes_committed", timeout=10)
        line = await second.wait_line(r"published (\d+) outcomes earlier terms committed", timeout=30)
        print(line)
        try:
            async with asyncio.timeout(30), changed:
                await changed.wait_for(lambda: expected <= set(seen))
        except TimeoutError:
            missing = sorted(expected - set(seen))
            pytest.fail(f"{len(missing)} outcomes never published, e.g. {missing[:5]}\n{second.output()}")
    finally:
        await worker.stop()
        await subscriber.close()
    assert set(seen) == expected, "only the submitted jobs' outcomes, each as succeeded"
    duplicates = sum(seen.values()) - len(seen)
    print(f"{len(seen)} outcomes, {duplicates} published twice (consumers de-duplicate by (job_id, outcome))")
    # Pruned once confirmed: the outbox empties (a flush every 0.5 s).
    async with asyncio.timeout(10):
        while True:  # the table has no events to wait on
            if await outbox_rows(database) == 0:
                break
            await asyncio.sleep(0.1)
    assert await second.terminate() == 0, second.output()


ADMISSIONS_CONFIG = """
database_url = "{database}"
amqp_url = "{amqp}"

[dependencies.api]
concurrency = 5
lease_timeout = "3s"

[dependencies.api.retry]
max_attempts = 1
"""


async def test_admissions_committed_before_a_kill_9_cost_no_attempt(
    database: str, vhost: str, tmp_path: Path, janus_process: type[JanusProcess]
) -> None:
    config_path = tmp_path / "janus.toml"
    config_path.write_text(ADMISSIONS_CONFIG.format(database=database, amqp=vhost))
    first = janus_process(config_path, "first", {**FAST_TIMINGS, CRASH_AT_ENV: ADMISSIONS_COMMITTED})
    second = janus_process(config_path, "second", FAST_TIMINGS)
    await first.start()
    await first.wait_admitting(30)
    await second.start()  # the standby

    async def ok(job: ReadyJob) -> None:
        await asyncio.sleep(0.01)

    jobs = [f"a-{i}" for i in range(JOBS)]
    log = RecordLog()
    worker = Worker(vhost, {"api": ok}, on_record=log.append)
    await worker.start()
    try:
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([(job, "api", None, "default") for job in jobs], window=50)
        assert first.process is not None
        code = await asyncio.wait_for(first.process.wait(), 30)
        assert code == -9, first.output()  # it killed itself after committing admissions
        await first.wait_line("fault injection: killing this process at admissions_committed", timeout=10)
        line = await second.wait_line(r"(\d+) admissions an earlier term committed may never", timeout=30)
        print(line)
        try:
            rows = await wait_for_states(
                database,
                lambda rows: all(rows[j]["state"] in ("succeeded", "dead") for j in jobs),
                timeout=30,
            )
        except TimeoutError:
            pytest.fail(f"jobs never finished\n{second.output()}")
    finally:
        await worker.stop()
    # The admissions the first leader committed and never published were not charged: with one
    # attempt allowed, each would be dead; they were admitted again (attempt 2) and succeeded.
    assert {j: rows[j]["state"] for j in jobs} == dict.fromkeys(jobs, "succeeded"), second.output()
    assert all(rows[j]["failures"] == 0 for j in jobs)
    readmitted = sorted(j for j in jobs if rows[j]["attempt"] > 1)
    print(f"{len(readmitted)} jobs admitted again after the takeover, none charged")
    assert readmitted, "the kill left no admission unpublished: the test proved nothing"
    assert all(r.attempt > 1 for r in log.records if r.job_id in readmitted), (
        "a lost admission reached a worker"
    )
    assert await second.terminate() == 0, second.output()
