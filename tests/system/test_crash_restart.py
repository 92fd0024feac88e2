"""Kill -9 Janus mid-stream, restart it, and check from the workers' side that nothing was lost
and no limit was broken across the restarts (rate windows and held slots rebuilt from PostgreSQL)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from janus.audit import audit
from janus.client import Producer, ReadyJob, Worker
from janus.config import load_config
from tests.integration.harness import RecordLog, job_rows, policies, succeed
from tests.system.janus_process import JanusProcess

pytestmark = pytest.mark.system

CONFIG = """
database_url = "{database}"
amqp_url = "{amqp}"

# Rate-bound: short jobs, a window that outlives a restart (rebuilt from the admission history).
[dependencies.api]
rate_limits = ["10/1s", "30/6s"]
concurrency = 20
lease_timeout = "3s"
admission_ttl = "0.5s"

[dependencies.api.retry]
base_delay = "0.1s"
max_delay = "0.5s"
max_attempts = 20

# A long window filled at once, before the first kill: the restarted leader must know it is full.
[dependencies.burst]
rate_limits = ["12/10s"]
lease_timeout = "3s"
admission_ttl = "0.5s"

# Concurrency-bound: jobs that outlive a restart (their slots must be rebuilt as held).
[dependencies.slow]
concurrency = 4
lease_timeout = "6s"
admission_ttl = "0.5s"
"""


def write_config(tmp_path: Path, database: str, amqp: str) -> Path:
    path = tmp_path / "janus.toml"
    path.write_text(CONFIG.format(database=database, amqp=amqp))
    return path


async def test_kill_9_and_restart_mid_stream_loses_nothing_and_breaks_no_limit(
    database: str, vhost: str, tmp_path: Path, janus_process: Callable[[Path, str], JanusProcess]
) -> None:
    config_path = write_config(tmp_path, database, vhost)
    config = load_config(config_path, env={})
    log = RecordLog()
    rng = random.Random(2)

    async def quick(job: ReadyJob) -> None:
        await asyncio.sleep(rng.uniform(0.01, 0.1))
        if rng.random() < 0.1:
            raise RuntimeError("flaky")

    async def slow(job: ReadyJob) -> None:
        await asyncio.sleep(rng.uniform(2.0, 4.5))

    janus = janus_process(config_path, "janus")
    await janus.start()
    await janus.wait_leading()

    worker = Worker(vhost, {"api": quick, "slow": slow, "burst": succeed}, on_record=log.append)
    await worker.start()
    jobs = [(f"job-{i}", "api", {"i": i}, f"t{i % 4}") for i in range(120)]
    jobs += [(f"slow-{i}", "slow", None, "default") for i in range(24)]
    jobs += [(f"burst-{i}", "burst", None, "default") for i in range(24)]
    producer = await Producer.connect(vhost)
    publishing = asyncio.create_task(producer.submit_many(jobs, window=20))
    kills = 0
    try:
        for kill_after in (4.5, 3.7, 5.2):
            await asyncio.sleep(kill_after + rng.uniform(0, 0.5))
            await janus.kill()
            kills += 1
            await janus.start()
            await janus.wait_leading()
        await publishing
        try:
            await log.wait_for(lambda _: len(log.succeeded()) == len(jobs), timeout=60)
        except TimeoutError:
            rows = await job_rows(database)
            stuck = [dict(r) for r in rows.values() if r["state"] != "succeeded"]
            missing = {j[0] for j in jobs} - set(rows)
            pytest.fail(
                f"unfinished: {stuck[:5]} ({len(stuck)}); never stored: {len(missing)}\n{janus.output()}"
            )
    finally:
        await worker.stop()
        await producer.close()
        code = await janus.terminate()
    assert code == 0, janus.output()
    assert kills == 3
    report = audit(log.records, policies(config), expected_jobs=[j[0] for j in jobs])
    assert report.ok, report.summary()
    assert report.dependencies["api"].worst_rate["30/6s"] == 30, "the rate limit should have been reached"
    assert report.dependencies["burst"].worst_rate["12/10s"] == 12
    assert report.dependencies["slow"].worst_concurrency == 4, (
        "the concurrency limit should have been reached"
    )
    connection = await asyncpg.connect(database)
    try:
        epochs = [
            row[0] for row in await connection.fetch("SELECT epoch FROM janus.leader_terms ORDER BY epoch")
        ]
        states = await connection.fetch("SELECT state, count(*) FROM janus.jobs GROUP BY state")
    finally:
        await connection.close()
    assert epochs == [1, 2, 3, 4]
    assert dict(states) == {"succeeded": len(jobs)}


async def test_a_second_process_stands_by_and_takes_over(
    database: str, vhost: str, tmp_path: Path, janus_process: Callable[[Path, str], JanusProcess]
) -> None:
    config_path = write_config(tmp_path, database, vhost)
    first = janus_process(config_path, "first")
    second = janus_process(config_path, "second")
    await first.start()
    await first.wait_leading()
    await second.start()
    log = RecordLog()

    worker = Worker(vhost, {"api": succeed}, on_record=log.append)
    await worker.start()
    try:
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([(f"a-{i}", "api", None, "x") for i in range(20)])
            await log.wait_for(lambda _: len(log.succeeded()) == 20, timeout=30)
            assert not second.leading, "two processes must never lead at once"
            await first.kill()
            loop = asyncio.get_running_loop()
            killed_at = loop.time()
            await second.wait_leading(timeout=10)
            takeover = loop.time() - killed_at
            await producer.submit_many([(f"b-{i}", "api", None, "x") for i in range(20)])
            await log.wait_for(lambda _: len(log.succeeded()) == 40, timeout=30)
    finally:
        await worker.stop()
        assert await second.terminate() == 0, second.output()
    print(f"takeover after kill -9: {takeover:.2f} s")
    assert takeover < 5.0
    config = load_config(config_path, env={})
    report = audit(log.records, policies(config))
    assert report.ok, report.summary()
