"""Every exchange and queue name Janus uses, and their declaration. No other module spells them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue
from aio_pika.exceptions import ChannelNotFoundEntity

T = TypeVar("T")

PREFIX = "janus"
INTAKE_EXCHANGE = f"{PREFIX}.intake"  # topic; producers publish, routing key = dependency
INTAKE_QUEUE = f"{PREFIX}.intake"  # Janus's own queue on it, bound to every key
READY_EXCHANGE = f"{PREFIX}.ready"  # direct; Janus publishes admissions, key = dependency
RESULTS_EXCHANGE = f"{PREFIX}.results"  # fanout; workers publish outcomes
RESULTS_QUEUE = f"{PREFIX}.results"
RETURNED_EXCHANGE = f"{PREFIX}.returned"  # fanout; ready queues dead-letter here
RETURNED_QUEUE = f"{PREFIX}.returned"
REJECTED_QUEUE = f"{PREFIX}.rejected"  # bad input set aside with its reason
OUTCOMES_EXCHANGE = f"{PREFIX}.outcomes"  # topic; Janus publishes terminal outcomes, key below

REASON_HEADER = "x-janus-reason"
DETAIL_HEADER = "x-janus-detail"


def ready_queue(dependency: str) -> str:
    return f"{PREFIX}.ready.{dependency}"


def outcome_key(dependency: str, outcome: str) -> str:
    """Routing key on janus.outcomes: "<dependency>.<outcome>" (outcome: succeeded, dead)."""
    return f"{dependency}.{outcome}"


async def declare_intake_exchange(channel: AbstractChannel) -> AbstractExchange:
    return await channel.declare_exchange(INTAKE_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)


async def declare_results_exchange(channel: AbstractChannel) -> AbstractExchange:
    return await channel.declare_exchange(RESULTS_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)


async def declare_ready_queue(channel: AbstractChannel, dependency: str) -> AbstractQueue:
    """A dependency's ready queue: admissions that expire or are rejected go back to Janus."""
    ready = await channel.declare_exchange(READY_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
    queue = await channel.declare_queue(
        ready_queue(dependency),
        durable=True,
        arguments={"x-dead-letter-exchange": RETURNED_EXCHANGE},
    )
    await queue.bind(ready, routing_key=dependency)
    return queue


async def declare_topology(channel: AbstractChannel, dependencies: Iterable[str]) -> None:
    """Everything Janus needs, idempotently, all durable."""
    intake = await declare_intake_exchange(channel)
    intake_queue = await channel.declare_queue(INTAKE_QUEUE, durable=True)
    await intake_queue.bind(intake, routing_key="#")

    results = await declare_results_exchange(channel)
    results_queue = await channel.declare_queue(RESULTS_QUEUE, durable=True)
    await results_queue.bind(results)

    returned = await channel.declare_exchange(RETURNED_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
    returned_queue = await channel.declare_queue(RETURNED_QUEUE, durable=True)
    await returned_queue.bind(returned)

    await channel.declare_queue(REJECTED_QUEUE, durable=True)
    await channel.declare_exchange(OUTCOMES_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    for dependency in dependencies:
        await declare_ready_queue(channel, dependency)


async def await_queue(
    connection: AbstractConnection, name: str, *, prefetch: int | None = None, timeout: float = 30.0
) -> tuple[AbstractChannel, AbstractQueue]:
    """A channel and the existing queue `name`, waiting for Janus to declare it.

    Clients check passively rather than declare: the topology is Janus's (and, in a
    locked-down deployment, the broker definitions'), not theirs.
    """
    return await _await_entity(connection, timeout, lambda ch: ch.get_queue(name, ensure=True), prefetch)


async def await_exchange(
    connection: AbstractConnection, name: str, *, confirms: bool = False, timeout: float = 30.0
) -> tuple[AbstractChannel, AbstractExchange]:
    return await _await_entity(
        connection, timeout, lambda ch: ch.get_exchange(name, ensure=True), None, confirms=confirms
    )


async def _await_entity(
    connection: AbstractConnection,
    timeout: float,
    get: Callable[[AbstractChannel], Awaitable[T]],
    prefetch: int | None,
    *,
    confirms: bool = False,
) -> tuple[AbstractChannel, T]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        channel = await connection.channel(publisher_confirms=confirms, on_return_raises=confirms)
        try:
            entity = await get(channel)
        except ChannelNotFoundEntity:
            if asyncio.get_running_loop().time() >= deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        if prefetch is not None:
            await channel.set_qos(prefetch_count=prefetch)
        return channel, entity
