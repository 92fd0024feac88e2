"""The linger rule (service/linger.py) in the running loop, against RabbitMQ and PostgreSQL: at a
moderate pace no tick waits to grow (a linger would only sit in every job's path), under a flood
of intake the loop does linger (fewer, bigger statements).

Observed through `janus_tick_lingers_total`, and asserted on counts only: no duration that a
slow, loaded machine could break.
"""

from __future__ import annotations

import asyncio

import pytest

from janus.client.producer import Producer
from janus.client.worker import Worker
from janus.service.app import Service
from tests.integration.harness import RecordLog, eventually, make_config, running_janus, succeed

pytestmark = pytest.mark.integration

MODERATE_JOBS = 100
MODERATE_PACE = 0.02  # seconds between two submissions: 50 jobs/s, for two seconds
FLOOD_JOBS = 5000


def lingers(service: Service) -> float:
    return service.metrics.registry.get_sample_value("janus_tick_lingers_total") or 0.0


def accepted(service: Service) -> float:
    sample = service.metrics.registry.get_sample_value("janus_intake_messages_total", {"outcome": "accepted"})
    return sample or 0.0


async def submit_at_a_pace(producer: Producer, count: int, every: float) -> None:
    """Submissions on a fixed schedule, so that slow confirms do not bunch them up later."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(count):
        await asyncio.sleep(max(start + i * every - loop.time(), 0.0))
        await producer.submit(f"paced-{i}", "api")


async def test_the_loop_lingers_under_a_flood_and_not_at_a_moderate_pace(database: str, vhost: str) -> None:
    # "bulk" has no worker: its flood is intake alone, stored and left waiting.
    config = make_config(database, vhost, {"api": {}, "bulk": {}})
    log = RecordLog()
    async with running_janus(config) as service:
        worker = Worker(vhost, {"api": succeed}, on_record=log.append)
        await worker.start()
        try:
            async with await Producer.connect(vhost) as producer:
                await submit_at_a_pace(producer, MODERATE_JOBS, MODERATE_PACE)
                await log.wait_for(lambda _: len(log.succeeded()) == MODERATE_JOBS, timeout=60)
                at_a_moderate_pace = lingers(service)

                await producer.submit_many((f"flood-{i}", "bulk", None, "default") for i in range(FLOOD_JOBS))
                await eventually(lambda: accepted(service) >= MODERATE_JOBS + FLOOD_JOBS, timeout=120)
                in_the_flood = lingers(service) - at_a_moderate_pace
        finally:
            await worker.stop()
    assert at_a_moderate_pace == 0, "every job, its admission and its result went through unlingered"
    assert in_the_flood > 0, "the flood's ticks waited to grow"
