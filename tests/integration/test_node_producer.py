"""The Node.js example producer (examples/node/producer.js) against a real broker: with amqplib
a confirm alone does not report an unroutable publish, so the producer must catch the
broker's basic.return and report the job as not published."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aio_pika
import pytest

from janus.broker import topology
from tests.node_example import PRODUCER, node_example

pytestmark = pytest.mark.integration

JOBS: list[dict[str, Any]] = [
    {"job_id": "order-1", "dependency": "api"},
    {"job_id": "order-2", "dependency": "api", "payload": {"n": 2}},
]


async def produce(vhost: str, jobs: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(PRODUCER),
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "JANUS_AMQP_URL": vhost},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    lines = "".join(json.dumps(job) + "\n" for job in jobs).encode()
    out, err = await asyncio.wait_for(process.communicate(lines), timeout=60)
    assert out, err.decode()
    return process.returncode or 0, json.loads(out)


async def test_a_publish_no_queue_takes_is_reported_then_goes_through_once_janus_declared_its_queue(
    vhost: str,
) -> None:
    node_example()
    connection = await aio_pika.connect(vhost)
    async with connection:
        channel = await connection.channel()
        # The exchange exists (the producer checks it), but no queue is bound: Janus has not
        # declared its intake queue yet.
        await channel.declare_exchange(topology.INTAKE_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        code, summary = await produce(vhost, JOBS)
        assert code == 1
        assert summary["published"] == 0
        assert [(f["job_id"], f["unroutable"]) for f in summary["failed"]] == [
            ("order-1", True),
            ("order-2", True),
        ]

        queue = await channel.declare_queue(topology.INTAKE_QUEUE, durable=True)
        await queue.bind(topology.INTAKE_EXCHANGE, routing_key="#")
        assert await produce(vhost, JOBS) == (0, {"published": 2, "failed": []})
        bodies = []
        for _ in JOBS:
            message = await queue.get(timeout=5)
            assert message is not None
            assert (message.content_type, message.delivery_mode, message.message_id) == (
                "application/json",
                aio_pika.DeliveryMode.PERSISTENT,
                json.loads(message.body)["job_id"],
            )
            bodies.append(json.loads(message.body))
            await message.ack()
    assert bodies == [{**job, "scope": "default"} for job in JOBS]
