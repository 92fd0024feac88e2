"""Several AMQP URLs: Janus and the SDK connect to the first node that answers."""

from __future__ import annotations

import aio_pika
import pytest

from janus.broker import connection as broker
from janus.broker import topology
from janus.client import Producer
from janus.errors import BrokerError, ConnectionSettingsError
from tests.integration.harness import close_connections_named
from tests.system.rabbit_cluster import free_port

pytestmark = pytest.mark.integration


def dead_node() -> str:
    return f"amqp://guest:guest@127.0.0.1:{free_port()}/"  # nothing listens there


async def test_the_first_node_that_answers_is_used(vhost: str) -> None:
    connection = await broker.connect(f"{dead_node()},{vhost}", name="cluster-connect", timeout=5)
    try:
        assert not connection.is_closed
    finally:
        await broker.close(connection)


async def test_every_node_failing_names_each() -> None:
    first, second = dead_node(), dead_node()
    with pytest.raises(BrokerError, match="no node of the RabbitMQ cluster answered") as raised:
        await broker.connect(f"{first},{second}", name="cluster-connect", timeout=5)
    assert first.rsplit(":", 1)[1] in str(raised.value)
    assert second.rsplit(":", 1)[1] in str(raised.value)


async def test_refused_credentials_are_not_tried_on_the_next_node(vhost: str) -> None:
    wrong = vhost.replace("guest:guest@", "guest:wrong@")
    with pytest.raises(ConnectionSettingsError, match="refused the credentials"):
        await broker.connect(f"{wrong},{vhost}", name="cluster-connect", timeout=5)


async def test_a_producer_reconnects_at_its_next_submit(vhost: str) -> None:
    """Its connection closed by the broker (a node stopped, a network cut): the next submit
    connects again (to the first node that answers) and publishes."""
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, ["api"])
        async with await Producer.connect(f"{dead_node()},{vhost}", name="cluster-producer") as producer:
            await producer.submit("before", "api")
            assert await close_connections_named("cluster-producer", vhost=vhost) == 1
            await producer.submit("after", "api")
        channel = await connection.channel()
        queue = await channel.get_queue(topology.INTAKE_QUEUE, ensure=True)
        ids = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            ids.append(message.message_id)
        assert ids == ["before", "after"]
