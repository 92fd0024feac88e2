"""Quorum queues on the real broker: every queue Janus declares is of the policy's type, ready
queues keep their per-message TTL and dead-lettering, a queue of the other type is a clear
error, and `janus broker-upgrade` converts an existing deployment without losing a message."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import unquote, urlsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractQueue

from janus.broker import queue_types, topology
from janus.errors import TopologyConflict
from tests.services import Services

pytestmark = pytest.mark.integration

DEPENDENCIES = ["api", "mail"]


def _vhost(url: str) -> str:
    return unquote(urlsplit(url).path[1:])


async def queue_types_in(services: Services, url: str) -> dict[str, str]:
    """{queue: type} as the broker lists them."""
    process = await asyncio.create_subprocess_exec(
        *services.local.rabbitmqctl,
        "list_queues",
        "-q",
        "--formatter",
        "json",
        "-p",
        _vhost(url),
        "name",
        "type",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    return {row["name"]: row["type"] for row in json.loads(out)}


def janus_queues() -> set[str]:
    names = {spec.name for spec in topology.SHARED_QUEUES}
    for dependency in DEPENDENCIES:
        names |= {topology.ready_queue(dependency), topology.results_queue(dependency)}
    return names


async def test_every_queue_janus_declares_is_a_quorum_queue(services: Services, vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        declared = await topology.declare_topology(connection, DEPENDENCIES, queue_type="quorum")
        assert set(declared) >= {spec.name for spec in topology.SHARED_QUEUES}
        assert await topology.declare_topology(connection, DEPENDENCIES, queue_type="quorum") == []
    types = await queue_types_in(services, vhost)
    assert {name: types.get(name) for name in janus_queues()} == dict.fromkeys(janus_queues(), "quorum")


async def test_a_quorum_ready_queue_dead_letters_expired_and_rejected_admissions(vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, ["api"], queue_type="quorum")
        channel = await connection.channel(publisher_confirms=True)
        ready = await channel.get_exchange(topology.READY_EXCHANGE, ensure=True)
        returned = await channel.get_queue(topology.RETURNED_QUEUE, ensure=True)
        # An admission that expires on the queue: dead-lettered back to Janus.
        await ready.publish(aio_pika.Message(b"expires", expiration=0.05), routing_key="api", mandatory=True)
        assert await returned_reasons(returned, 1) == {b"expires": "expired"}
        # One a worker refuses unstarted: dead-lettered too.
        await ready.publish(aio_pika.Message(b"rejected"), routing_key="api", mandatory=True)
        queue = await channel.get_queue(topology.ready_queue("api"), ensure=True)
        async with queue.iterator() as messages:
            async for message in messages:
                assert message.body == b"rejected"
                await message.reject(requeue=False)
                break
        assert await returned_reasons(returned, 1) == {b"rejected": "rejected"}


async def returned_reasons(returned: AbstractQueue, count: int) -> dict[bytes, str]:
    """The next `count` messages of janus.q.returned: {body: why it was dead-lettered}."""
    got: dict[bytes, str] = {}
    deadline = asyncio.get_running_loop().time() + 10
    while len(got) < count and asyncio.get_running_loop().time() < deadline:
        message = await returned.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.05)
            continue
        death = message.headers["x-death"][0]  # type: ignore[index]
        got[message.body] = str(death["reason"])  # type: ignore[index,call-overload]
    return got


async def test_a_queue_of_the_other_type_is_a_clear_error_naming_it(vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, DEPENDENCIES, queue_type="classic")
        with pytest.raises(TopologyConflict) as raised:
            await topology.declare_topology(connection, DEPENDENCIES, queue_type="quorum")
        assert topology.INTAKE_QUEUE in str(raised.value)
        assert "janus broker-upgrade" in str(raised.value)
        await queue_types.convert_queues(connection, DEPENDENCIES, "quorum")
        # and back: a quorum ready queue met by a classic policy names it too
        channel = await connection.channel()
        await channel.queue_delete(topology.INTAKE_QUEUE)
        await channel.queue_delete(topology.UNROUTABLE_QUEUE)
        await channel.queue_delete(topology.RETURNED_QUEUE)
        await channel.queue_delete(topology.REJECTED_QUEUE)
        with pytest.raises(TopologyConflict) as raised:
            await topology.declare_topology(connection, DEPENDENCIES, queue_type="classic")
        assert topology.ready_queue("api") in str(raised.value)


async def test_broker_upgrade_converts_classic_queues_keeping_every_message(
    services: Services, vhost: str
) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, DEPENDENCIES, queue_type="classic")
        channel = await connection.channel(publisher_confirms=True)
        intake = await channel.get_exchange(topology.INTAKE_EXCHANGE, ensure=True)
        ready = await channel.get_exchange(topology.READY_EXCHANGE, ensure=True)
        results = await channel.get_exchange(topology.RESULTS_EXCHANGE, ensure=True)
        for i in range(50):
            await intake.publish(
                aio_pika.Message(f"intake-{i}".encode(), headers={"n": i}), routing_key="api", mandatory=True
            )
        for i in range(5):
            await ready.publish(
                aio_pika.Message(f"ready-{i}".encode(), expiration=600), routing_key="api", mandatory=True
            )
        await results.publish(aio_pika.Message(b"result"), routing_key="mail", mandatory=True)

        converted = await queue_types.convert_queues(connection, DEPENDENCIES, "quorum")
        assert converted[topology.INTAKE_QUEUE] == 50
        assert converted[topology.ready_queue("api")] == 5
        assert converted[topology.results_queue("mail")] == 1
        assert set(converted) == janus_queues()
        assert await topology.declare_topology(connection, DEPENDENCIES, queue_type="quorum") == []
        assert await queue_types.convert_queues(connection, DEPENDENCIES, "quorum") == {}, "idempotent"

        # The messages are back, in order, with their properties; the bindings work again.
        await intake.publish(aio_pika.Message(b"after"), routing_key="mail", mandatory=True)
        queue = await channel.get_queue(topology.INTAKE_QUEUE, ensure=True)
        bodies, headers = [], []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            bodies.append(message.body.decode())
            headers.append(message.headers.get("n"))
        assert bodies == [f"intake-{i}" for i in range(50)] + ["after"]
        assert headers == [*range(50), None]
        ready_queue = await channel.get_queue(topology.ready_queue("api"), ensure=True)
        kept = []
        while (message := await ready_queue.get(no_ack=True, fail=False)) is not None:
            kept.append((message.body.decode(), message.expiration))
        assert kept == [(f"ready-{i}", 600) for i in range(5)]
    types = await queue_types_in(services, vhost)
    assert {name: types.get(name) for name in janus_queues()} == dict.fromkeys(janus_queues(), "quorum")
    assert not any(name.endswith(queue_types.HOLDING_SUFFIX) for name in types)


async def test_broker_upgrade_finishes_a_conversion_stopped_midway(vhost: str) -> None:
    """Stopped after the queue was deleted, its messages in the holding queue: run again, kept."""
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, DEPENDENCIES, queue_type="classic")
        channel = await connection.channel(publisher_confirms=True)
        await channel.queue_delete(topology.INTAKE_QUEUE)
        holding = topology.INTAKE_QUEUE + queue_types.HOLDING_SUFFIX
        await channel.declare_queue(holding, durable=True, arguments=topology.queue_arguments("quorum"))
        await channel.default_exchange.publish(aio_pika.Message(b"held"), routing_key=holding)
        converted = await queue_types.convert_queues(connection, DEPENDENCIES, "quorum")
        assert converted[topology.INTAKE_QUEUE] == 0  # nothing left to move out; one moved back
        await topology.declare_topology(connection, DEPENDENCIES, queue_type="quorum")
        queue = await channel.get_queue(topology.INTAKE_QUEUE, ensure=True)
        message = await queue.get(no_ack=True, fail=False)
        assert message is not None
        assert message.body == b"held"
