"""A RabbitMQ node lost mid-stream (issue 18): a three-node cluster of this machine's own
rabbitmq-server, quorum queues, Janus and the SDK given every node's URL. One node is stopped
while jobs flow under rate and concurrency limits: a node nobody is connected to, or the node
Janus, the worker and the producer are connected to (and where the queues' leaders are). From
the workers' records: nothing lost, no limit broken, admissions resume within 10 s; Janus is
still running and stops cleanly."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from janus.audit import audit
from janus.client import Producer, ReadyJob, Worker
from janus.config import load_config
from tests.integration.harness import RecordLog, job_rows, policies
from tests.system.janus_process import JanusProcess
from tests.system.rabbit_cluster import RabbitCluster, cluster_unavailable

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(cluster_unavailable() is not None, reason=f"{cluster_unavailable()}"),
]

CONFIG = """
database_url = "{database}"
amqp_url = {urls}
queue_type = "quorum"

[dependencies.api]
rate_limits = ["20/1s", "100/6s"]
concurrency = 6
lease_timeout = "8s"

[dependencies.api.retry]
base_delay = "0.1s"
max_delay = "0.5s"
max_attempts = 20
"""
JOBS = 240  # at 100/6s: about 14 s of flow, so the backlog outlasts the node's loss
RESUME_WITHIN = 10.0
# The lease covers the work and its report (docs/protocol.md, "Publishing results reliably"):
# a report sent while the node is lost waits for a reconnect and, on loaded CI machines, for a
# quorum queue's new leader. With 5 s, loaded CI runs saw up to 6 jobs run twice (which the
# audit counts; a report later than the lease is the likeliest cause, not pinned down).
# 8 s still frees a slot lost with the node before RESUME_WITHIN.


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[RabbitCluster]:
    # Three brokers booting and joining on a loaded 2-core machine now and then fail a step
    # (seen once in CI, a setup error): a fresh cluster (new names and ports) gets one more go.
    for attempt in (1, 2):
        rabbits = RabbitCluster(tmp_path / f"rabbit-{attempt}")
        try:
            await rabbits.start()
            break
        except Exception as exc:
            await rabbits.stop()
            if attempt == 2:
                raise
            print(f"the cluster did not start ({exc!r}); starting a fresh one")
    try:
        yield rabbits
    finally:
        await rabbits.stop()


def longest_pause(admitted: list[float], after: float) -> float:
    """The longest time between two admissions the workers saw around and after `after`."""
    times = sorted(t for t in admitted if t >= after - 1.0)
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


@pytest.mark.parametrize("stopped", [2, 0], ids=["a-node-nobody-uses", "the-node-janus-uses"])
async def test_a_node_stopped_mid_stream_loses_nothing_and_breaks_no_limit(
    stopped: int,
    cluster: RabbitCluster,
    database: str,
    tmp_path: Path,
    janus_process: Callable[[Path, str], JanusProcess],
) -> None:
    urls = "[" + ", ".join(f'"{node.url}"' for node in cluster.nodes) + "]"
    config_path = tmp_path / "janus.toml"
    config_path.write_text(CONFIG.format(database=database, urls=urls))
    config = load_config(config_path, env={})
    log = RecordLog()

    async def work(job: ReadyJob) -> None:
        await asyncio.sleep(0.05)

    janus = janus_process(config_path, "janus")
    await janus.start()
    await janus.wait_leading(60)
    worker = Worker(cluster.urls, {"api": work}, on_record=log.append)
    await worker.start()
    jobs = [(f"job-{i}", "api", {"i": i}, f"t{i % 3}") for i in range(JOBS)]
    producer = await Producer.connect(cluster.urls)
    try:
        publishing = asyncio.create_task(producer.submit_many(jobs, window=20))
        await log.wait_for(lambda records: len(records) >= 40, timeout=60)
        stopped_at = time.time()
        await cluster.stop_node(cluster.nodes[stopped])
        print(f"stopped {cluster.nodes[stopped].name} in {time.time() - stopped_at:.1f} s")
        await publishing
        try:
            await log.wait_for(lambda _: len(log.succeeded()) == JOBS, timeout=120)
        except TimeoutError:
            rows = await job_rows(database)
            stuck = [dict(r) for r in rows.values() if r["state"] != "succeeded"]
            pytest.fail(f"unfinished: {stuck[:5]} ({len(stuck)}); stored {len(rows)}\n{janus.output()}")
        assert janus.running, janus.output()
    finally:
        await worker.stop()
        await producer.close()
        code = await janus.terminate()
    assert code == 0, janus.output()
    report = audit(log.records, policies(config), expected_jobs=[job[0] for job in jobs])
    assert report.ok, f"{report.summary()}\n{janus.output()}"  # a duplicate: the term change shows there
    assert report.dependencies["api"].worst_rate["100/6s"] == 100, "the rate limit should have been reached"
    pause = longest_pause([record.admitted_at for record in log.records], stopped_at)
    print(f"longest pause between admissions from the stop on: {pause:.2f} s")
    assert pause < RESUME_WITHIN, f"admissions paused {pause:.1f} s\n{janus.output()}"
