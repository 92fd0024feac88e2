"""A rate limit as the dependency sees it: starts in every window of T, at workers that follow the protocol.

`LateStarter` follows the protocol to the letter (it never starts at or after `expires_at`)
but uses all the room it has, the way the proof in `RateLimit.admission_window` does: the
admissions of one burst start as late as they may, those of the next at once. Against a
limit that counts starts (the default) the audit finds at most COUNT starts in every window
of T; against one that counts admissions, the same worker makes the dependency see more,
which is what that meaning allows and why it is not the default.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import replace
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from janus.audit import audit, max_in_window
from janus.broker import topology
from janus.client import Producer
from janus.client.worker import WorkRecord
from janus.core.policy import RateCounting
from janus.protocol import CONTENT_TYPE, decode_ready, encode_result
from tests.integration.harness import RecordLog, make_config, policies, running_janus

pytestmark = pytest.mark.integration

# How long before `expires_at` a late start happens: room for the ack and the clock read.
MARGIN = 0.05


class LateStarter:
    """Starts the admissions of every other burst (counted in windows of `period` from the first
    admission it sees) just before they expire, and the others at once. Every job succeeds."""

    def __init__(self, amqp_url: str, dependency: str, period: float, log: RecordLog) -> None:
        self._url, self._dependency, self._period, self._log = amqp_url, dependency, period, log
        self._first: float | None = None
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._results: AbstractExchange | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._connection = await aio_pika.connect(self._url, client_properties={"connection_name": "late"})
        _, self._results = await topology.await_exchange(
            self._connection, topology.RESULTS_EXCHANGE, confirms=True
        )
        _, queue = await topology.await_queue(
            self._connection, topology.ready_queue(self._dependency), prefetch=1000
        )
        await queue.consume(self._on_message)

    async def stop(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks)
        if self._connection is not None:
            await self._connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self._work(message, time.time()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _work(self, message: AbstractIncomingMessage, received: float) -> None:
        job = decode_ready(message.body)
        if self._first is None:
            self._first = job.admitted_at
        burst = math.floor((job.admitted_at - self._first) / self._period)
        if burst % 2 == 0:
            # The behaviour under test, not a wait for an event: hold the admission as long as allowed.
            await asyncio.sleep(max(0.0, job.expires_at - MARGIN - time.time()))
        started = time.time()
        record: dict[str, Any] = {
            "job_id": job.job_id,
            "dependency": job.dependency,
            "scope": job.scope,
            "attempt": job.attempt,
            "admitted_at": job.admitted_at,
            "expires_at": job.expires_at,
            "received_at": received,
        }
        if started >= job.expires_at:
            await message.reject(requeue=False)
            self._log.append(WorkRecord(**record, started_at=None, finished_at=None, outcome="expired"))
            return
        await message.ack()
        self._log.append(WorkRecord(**record, started_at=started, finished_at=started, outcome="success"))
        assert self._results is not None
        body = encode_result(job_id=job.job_id, attempt=job.attempt, outcome="success")
        await self._results.publish(
            aio_pika.Message(body, content_type=CONTENT_TYPE, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=job.dependency,
        )


async def run_late_starters(config: Any, jobs: list[tuple[str, str, None, str]], period: float) -> RecordLog:
    log = RecordLog()
    async with running_janus(config):
        worker = LateStarter(config.amqp_url, "api", period, log)
        await worker.start()
        async with await Producer.connect(config.amqp_url) as producer:
            await producer.submit_many(jobs)
        await log.wait_for(lambda _: log.succeeded() == {job[0] for job in jobs}, timeout=60)
        await worker.stop()
    return log


@pytest.mark.parametrize("counts", ["starts", "admissions"])
async def test_starts_in_every_window_of_t_hold_only_when_the_limit_counts_them(
    database: str, vhost: str, counts: str
) -> None:
    limit = {"limit": "10/1s", "counts": counts}
    config = make_config(
        database, vhost, {"api": {"rate_limits": [limit], "admission_ttl": "0.5s", "lease_timeout": "5s"}}
    )
    jobs = [(f"job-{i}", "api", None, "default") for i in range(40)]
    log = await run_late_starters(config, jobs, period=1.0)

    report = audit(log.records, policies(config), expected_jobs=[job[0] for job in jobs])
    assert report.ok, report.summary()  # each meaning holds what it promises
    starts = [r.started_at for r in log.records if r.started_at is not None]
    worst = max_in_window(starts, 1.0)
    print(f"\ncounting {counts}: at most {worst} starts in one window of 1 s (limit 10)")
    policy = policies(config)["api"]
    as_starts = replace(policy, rate_limits=(replace(policy.rate_limits[0], counts=RateCounting.STARTS),))
    judged_by_starts = audit(log.records, {"api": as_starts})
    if counts == "starts":
        assert worst == 10, "the limit was reached, so holding it means something"
    else:
        # The older meaning: two bursts' starts, one late and one early, in one window of T.
        assert worst > 10
        assert not judged_by_starts.ok, "the audit's check of starts in windows of T must be able to fail"


async def test_scope_rate_limits_count_starts_too(database: str, vhost: str) -> None:
    config = make_config(
        database,
        vhost,
        {
            "api": {
                "admission_ttl": "0.4s",
                "lease_timeout": "5s",
                "fairness": {"scope_rate_limits": ["3/1s"]},
            }
        },
    )
    jobs = [(f"{scope}-{i}", "api", None, scope) for i in range(9) for scope in ("a", "b", "c")]
    log = await run_late_starters(config, jobs, period=1.0)
    report = audit(log.records, policies(config), expected_jobs=[job[0] for job in jobs])
    assert report.ok, report.summary()
    assert report.dependencies["api"].worst_start_rate["scope 3/1s"] == 3
