"""Admissions and outcomes published as one batch (janus/broker/batch.py), on a real broker:
every message arrives whole and in order, each is confirmed or refused on its own, and the
channel's confirms stay matched to later publishes after a refusal."""

from __future__ import annotations

import json

import aio_pika
import pytest

from janus.broker import topology
from janus.broker.publisher import Publisher
from janus.core.jobs import Admission
from janus.core.outbox import OutboxMessage
from janus.errors import BrokerError


def _admission(job_id: str, dependency: str, payload: object = None) -> Admission:
    return Admission(
        job_id=job_id,
        dependency=dependency,
        scope="default",
        payload=payload,
        attempt=1,
        admitted_at=1000.0,
        expires_at=1030.0,
        lease_deadline=1060.0,
    )


async def _drain(queue: aio_pika.abc.AbstractQueue, count: int) -> list[aio_pika.abc.AbstractIncomingMessage]:
    got = []
    async with queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            got.append(message)
            if len(got) == count:
                break
    return got


async def test_a_batch_arrives_whole_and_in_order(vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, ["api"])
        publisher = await Publisher.open(connection)
        big = "x" * 300_000  # several body frames, and more than one write of the batch
        admissions = [_admission(f"job-{i}", "api", big if i in (3, 700) else {"i": i}) for i in range(900)]
        assert await publisher.publish_admissions(admissions) == []
        channel = await connection.channel()
        ready = await channel.get_queue(topology.ready_queue("api"), ensure=True)
        got = await _drain(ready, len(admissions))
        assert [m.message_id for m in got] == [a.job_id for a in admissions]
        assert [json.loads(m.body)["payload"] for m in got] == [a.payload for a in admissions]
        assert {m.expiration for m in got} == {30.0}
        assert {m.delivery_mode for m in got} == {aio_pika.DeliveryMode.PERSISTENT}


async def test_refused_ones_come_back_and_later_confirms_still_match(vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, ["api"])
        channel = await connection.channel()
        # A ready queue that refuses beyond 5 messages (a nack), and a dependency no queue is
        # bound for (returned unroutable): both in one batch with admissions that go through.
        full = await channel.declare_queue(
            "full", arguments={"x-max-length": 5, "x-overflow": "reject-publish"}
        )
        await full.bind(topology.READY_EXCHANGE, routing_key="full")
        publisher = await Publisher.open(connection)
        batch = [_admission(f"ok-{i}", "api") for i in range(20)]
        batch += [_admission(f"full-{i}", "full") for i in range(8)]
        batch += [_admission(f"lost-{i}", "nowhere") for i in range(3)]
        batch += [_admission(f"ok-late-{i}", "api") for i in range(10)]
        refused = await publisher.publish_admissions(batch)
        assert sorted(a.job_id for a in refused) == sorted(
            [f"full-{i}" for i in range(5, 8)] + [f"lost-{i}" for i in range(3)]
        )
        # The channel's delivery tags still match the broker's: a later batch is confirmed whole.
        outcomes = [
            OutboxMessage(id=f"o-{i}", job_id=f"ok-{i}", routing_key="api.succeeded", body=b"{}")
            for i in range(50)
        ]
        assert await publisher.publish_outcomes(outcomes) == []
        assert await publisher.publish_admissions([_admission("after", "api")]) == []
        ready = await channel.get_queue(topology.ready_queue("api"), ensure=True)
        got = await _drain(ready, 31)
        assert [m.message_id for m in got][-1] == "after"


async def test_a_closed_channel_raises(vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, ["api"])
        publisher = await Publisher.open(connection)
        await publisher.channel.close()
        with pytest.raises(BrokerError):
            await publisher.publish_admissions([_admission("job-1", "api")])
