"""Changing the type of Janus's queues in place (classic <-> quorum): `janus broker-upgrade`.

RabbitMQ cannot change a queue's type: the queue must be deleted and declared again. Each of
Janus's queues whose type differs from the policy's `queue_type` has its messages moved to a
holding queue of the new type (each republished with its properties and confirmed before it
is acked, so a crash midway loses nothing: the messages are in one queue or the other, at
worst in both), is deleted, declared again with its bindings, and gets the messages back.
Run it with the producers, workers and Janus stopped: while a queue is deleted, what is
routed to it is unroutable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import ChannelNotFoundEntity
from aiormq.exceptions import ChannelPreconditionFailed
from pamqp.common import FieldTable

from janus.broker import broker_errors, topology
from janus.broker.topology import QueueType
from janus.errors import TopologyConflict

HOLDING_SUFFIX = ".upgrading"  # + the holding queue of a queue being redeclared
RELAY_PREFIX = "janus.upgrading."  # + a queue: the fanout exchange that moves messages into it


@dataclass(frozen=True, kw_only=True, slots=True)
class ConvertibleQueue:
    name: str
    arguments: FieldTable  # as `queue_type` wants it
    declare: Callable[[AbstractChannel], Awaitable[AbstractQueue]]  # declared again, with its bindings


def _queues(dependencies: list[str], queue_type: QueueType) -> list[ConvertibleQueue]:
    queues = [
        ConvertibleQueue(
            name=spec.name,
            arguments=topology.queue_arguments(queue_type),
            declare=partial(topology.declare_shared_queue, spec=spec, queue_type=queue_type),
        )
        for spec in topology.SHARED_QUEUES
    ]
    for dependency in dependencies:
        queues.append(
            ConvertibleQueue(
                name=topology.ready_queue(dependency),
                arguments=topology.ready_queue_arguments(queue_type),
                declare=partial(topology.declare_ready_queue, dependency=dependency, queue_type=queue_type),
            )
        )
        queues.append(
            ConvertibleQueue(
                name=topology.results_queue(dependency),
                arguments=topology.queue_arguments(queue_type),
                declare=partial(topology.declare_results_queue, dependency=dependency, queue_type=queue_type),
            )
        )
    return queues


async def convert_queues(
    connection: AbstractConnection, dependencies: list[str], queue_type: QueueType
) -> dict[str, int]:
    """Redeclare as `queue_type` every existing queue of Janus's that is of another type;
    returns {queue: messages moved} for those it converted. BrokerError if the broker fails."""
    with broker_errors("converting the queues' type failed"):
        converted: dict[str, int] = {}
        for queue in _queues(dependencies, queue_type):
            if await needs_conversion(connection, queue):
                converted[queue.name] = await convert_queue(connection, queue)
        return converted


async def needs_conversion(connection: AbstractConnection, queue: ConvertibleQueue) -> bool:
    """Whether `queue` exists with other arguments, or a holding queue was left behind (an
    upgrade stopped midway, to be finished). Also for the intake queues of member mode."""
    return await _exists(connection, queue.name + HOLDING_SUFFIX) or await _differs(connection, queue)


async def _exists(connection: AbstractConnection, name: str) -> bool:
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, passive=True)
    except ChannelNotFoundEntity:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()
    return True


async def _differs(connection: AbstractConnection, queue: ConvertibleQueue) -> bool:
    """Whether `queue` exists with other arguments (declaring it as wanted is PRECONDITION_FAILED)."""
    channel = await connection.channel()
    try:
        await channel.declare_queue(queue.name, passive=True)
        await channel.declare_queue(queue.name, durable=True, arguments=queue.arguments)
    except ChannelNotFoundEntity:
        return False  # declare_topology makes it
    except ChannelPreconditionFailed:
        return True
    finally:
        if not channel.is_closed:
            await channel.close()
    return False


async def convert_queue(connection: AbstractConnection, queue: ConvertibleQueue) -> int:
    """Redeclare `queue` with its arguments, its messages kept; returns how many it moved."""
    holding_name = queue.name + HOLDING_SUFFIX
    # Two channels: RabbitMQ 3.10's channel remembers the type of a queue it used, and crashes
    # (INTERNAL_ERROR) publishing to a queue of that name declared again with another type.
    async with _confirming(connection) as channel:
        # The holding queue has the new type and arguments: an admission that expires while
        # held is dead-lettered back to Janus as it would be from its ready queue.
        await channel.declare_queue(holding_name, durable=True, arguments=queue.arguments)
        moved = 0
        if await _exists(connection, queue.name):
            old = await channel.declare_queue(queue.name, passive=True)
            moved = await _move(channel, old, holding_name)
            await _delete_empty(channel, queue.name)
    async with _confirming(connection) as channel:
        new = await queue.declare(channel)
        holding = await channel.declare_queue(holding_name, passive=True)
        await _move(channel, holding, new.name)
        await _delete_empty(channel, holding_name)
    return moved


async def _delete_empty(channel: AbstractChannel, name: str) -> None:
    """Delete the queue `name`, emptied by `_move`. Quorum queues refuse queue.delete's if-empty:
    the count is checked first (a message published meanwhile: producers still running)."""
    left = (await channel.declare_queue(name, passive=True)).declaration_result.message_count or 0
    if left:
        raise TopologyConflict(
            f"{left} messages reached {name!r} while it was being converted: stop the producers, the "
            f"workers and Janus, then run `janus broker-upgrade` again (nothing is lost: they are kept)"
        )
    await channel.queue_delete(name)


@asynccontextmanager
async def _confirming(connection: AbstractConnection) -> AsyncIterator[AbstractChannel]:
    channel = await connection.channel(publisher_confirms=True)
    try:
        yield channel
    finally:
        if not channel.is_closed:
            await channel.close()


async def _move(channel: AbstractChannel, source: AbstractQueue, destination: str) -> int:
    """Every message of `source` into the queue `destination`: published, confirmed, then acked.

    Through a fanout exchange bound to `destination` alone, with each message's own routing key:
    the default exchange would replace it by the queue's name, and Janus refuses an intake or a
    result whose routing key is not its dependency (wrong_routing_key)."""
    relay = await channel.declare_exchange(
        RELAY_PREFIX + destination, aio_pika.ExchangeType.FANOUT, durable=True
    )
    await channel.declare_queue(destination, passive=True)
    await (await channel.get_queue(destination, ensure=False)).bind(relay)
    moved = 0
    while (message := await source.get(no_ack=False, fail=False)) is not None:
        await relay.publish(copy_message(message), routing_key=message.routing_key or "", mandatory=True)
        await message.ack()
        moved += 1
    await relay.delete()
    return moved


def copy_message(message: AbstractIncomingMessage) -> aio_pika.Message:
    """A waiting message to publish again elsewhere: its body and properties, persistent."""
    # A quorum queue's delivery count belongs to the queue it came from, not to the next one.
    headers = {k: v for k, v in message.headers.items() if k != "x-delivery-count"}
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        expiration=message.expiration,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )
