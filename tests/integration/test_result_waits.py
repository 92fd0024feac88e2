"""Results wait for the next intake message to share its tick (service/admission_loop.py), only
while no job of their dependency is eligible: against RabbitMQ and PostgreSQL.

At a steady pace a job then costs about one tick, not two (its intake's and its result's); a
dependency with a backlog, whose results free slots that waiting jobs need, never holds them.
Asserted on counts only (ticks, waits), never on durations a loaded machine could break.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from janus.client.producer import Producer
from janus.client.worker import ReadyJob, Worker
from janus.service import admission_loop
from janus.service.app import Service
from tests.integration.harness import RecordLog, make_config, running_janus, succeed, wait_for_states

pytestmark = pytest.mark.integration

PACE = 0.05  # seconds between two submissions: 20 jobs/s
# Results may wait up to 0.1 s here, not 10 ms: at 20 jobs/s a result then comes well before the
# next intake (which a faster pace, on a slow machine, can bring in the same tick by chance).
WAIT = 0.1
STEADY_JOBS = 100
BACKLOG_JOBS = 30  # at 20 jobs/s into a dependency that serves about 7 a second


def sample(service: Service, name: str) -> float:
    return service.metrics.registry.get_sample_value(name) or 0.0


def ticks(service: Service) -> float:
    return sample(service, "janus_tick_messages_count")


def finished(rows: Mapping[str, Any]) -> list[str]:
    return [job_id for job_id, row in rows.items() if row["state"] == "succeeded"]


def waits(service: Service) -> float:
    return sample(service, "janus_tick_result_waits_total")


async def submit_at_a_pace(producer: Producer, prefix: str, dependency: str, count: int) -> None:
    """Submissions on a fixed schedule, so that slow confirms do not bunch them up later."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(count):
        await asyncio.sleep(max(start + i * PACE - loop.time(), 0.0))
        await producer.submit(f"{prefix}-{i}", dependency)


async def slowly(job: ReadyJob) -> None:
    await asyncio.sleep(0.15)


async def test_results_share_the_next_intake_tick_unless_a_backlog_needs_them(
    database: str, vhost: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission_loop, "RESULTS_WAIT", WAIT)
    config = make_config(database, vhost, {"api": {}, "capped": {"concurrency": 1}})
    log = RecordLog()
    async with running_janus(config) as service:
        worker = Worker(vhost, {"api": succeed, "capped": slowly}, on_record=log.append)
        await worker.start()
        try:
            async with await Producer.connect(vhost) as producer:
                ticks_before, waits_before = ticks(service), waits(service)
                await submit_at_a_pace(producer, "steady", "api", STEADY_JOBS)
                await log.wait_for(lambda _: len(log.succeeded()) == STEADY_JOBS, timeout=60)
                steady_ticks = ticks(service) - ticks_before
                steady_waits = waits(service) - waits_before

                # Every result applied (the worker records a job before Janus takes its result).
                await wait_for_states(database, lambda rows: len(finished(rows)) == STEADY_JOBS, timeout=30)
                waits_before = waits(service)
                await submit_at_a_pace(producer, "backlog", "capped", BACKLOG_JOBS)
                backlog_waits = waits(service) - waits_before  # while the backlog grew
                await log.wait_for(lambda _: len(log.succeeded()) == STEADY_JOBS + BACKLOG_JOBS, timeout=60)
        finally:
            await worker.stop()
    assert steady_waits >= STEADY_JOBS / 4, "results waited for the next intake message"
    # Without the wait: an intake tick and a result tick per job, about 2 * STEADY_JOBS.
    assert steady_ticks <= 1.3 * STEADY_JOBS, f"{steady_ticks} ticks for {STEADY_JOBS} jobs"
    # Each result freed the one slot a waiting job needed: none waited.
    assert backlog_waits == 0
