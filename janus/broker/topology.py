"""Every exchange and queue name Janus uses, and their declaration. No other module spells them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar
from urllib.parse import unquote

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue
from aio_pika.exceptions import ChannelNotFoundEntity
from aiormq.exceptions import ChannelAccessRefused, ChannelPreconditionFailed
from pamqp.common import FieldTable

from janus.broker import broker_errors
from janus.errors import TopologyConflict

T = TypeVar("T")

PREFIX = "janus"
INTAKE_EXCHANGE = f"{PREFIX}.intake"  # topic; producers publish, routing key = dependency
READY_EXCHANGE = f"{PREFIX}.ready"  # direct; Janus publishes admissions, key = dependency
# topic; workers publish results, routing key = their dependency. Topic, not direct: RabbitMQ's
# topic permissions (which routing keys a user may publish with) apply to topic exchanges only,
# and they are what keeps a worker of one dependency from reporting for another.
RESULTS_EXCHANGE = f"{PREFIX}.results"
# fanout; the alternate exchange of janus.results: results whose routing key no dependency's
# queue is bound with (empty, unknown) end up here instead of vanishing.
UNROUTABLE_EXCHANGE = f"{PREFIX}.unroutable"
RETURNED_EXCHANGE = f"{PREFIX}.returned"  # fanout; ready queues dead-letter here
# Janus's own queues live under "janus.q." so that no queue shares a name with an exchange:
# a RabbitMQ permission regex matches both kinds, and a producer's right to write to the
# exchange janus.intake must not also be a right to bind the queue Janus consumes.
INTAKE_QUEUE = f"{PREFIX}.q.intake"  # bound to janus.intake with "#"
# Scale-out (docs/scale-out.md): one intake queue per dependency, bound to janus.intake with the
# dependency as key, so that each dependency's owner reads its own intake and nothing else.
INTAKE_QUEUE_PREFIX = f"{PREFIX}.q.intake."  # + dependency
RESULTS_QUEUE_PREFIX = f"{PREFIX}.q.results."  # + dependency: bound to janus.results with its key
UNROUTABLE_QUEUE = f"{PREFIX}.q.unroutable"  # bound to janus.unroutable; Janus sets all of it aside
# Before results were routed per dependency (one fanout janus.results, one queue): only named to
# tell operators how to upgrade (docs/protocol.md, "Upgrading").
LEGACY_RESULTS_QUEUE = f"{PREFIX}.q.results"
RETURNED_QUEUE = f"{PREFIX}.q.returned"  # bound to janus.returned
REJECTED_QUEUE = f"{PREFIX}.rejected"  # bad input set aside with its reason
OUTCOMES_EXCHANGE = f"{PREFIX}.outcomes"  # topic; Janus publishes terminal outcomes, key below
# A subscriber's own queues for outcomes (the `subscriber` broker user may make only these).
SUBSCRIBER_QUEUE_PREFIX = f"{PREFIX}.sub."

REASON_HEADER = "x-janus-reason"
DETAIL_HEADER = "x-janus-detail"
SOURCE_HEADER = "x-janus-source"
# On a message set aside truncated (it was over its cap): how many bytes it had.
ORIGINAL_SIZE_HEADER = "x-janus-original-size"


def ready_queue(dependency: str) -> str:
    return f"{PREFIX}.ready.{dependency}"


def intake_queue(dependency: str) -> str:
    """Where the owner of `dependency` takes its intake, in member mode (docs/scale-out.md)."""
    return f"{INTAKE_QUEUE_PREFIX}{dependency}"


def results_queue(dependency: str) -> str:
    """Where Janus takes the results workers of `dependency` publish (routing key = dependency)."""
    return f"{RESULTS_QUEUE_PREFIX}{dependency}"


def outcome_key(dependency: str, outcome: str) -> str:
    """Routing key on janus.outcomes: "<dependency>.<outcome>" (outcome: succeeded, dead)."""
    return f"{dependency}.{outcome}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ExchangeSpec:
    name: str
    type: aio_pika.ExchangeType
    arguments: FieldTable | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueSpec:
    name: str
    bound_to: str | None = None  # an exchange of SHARED_EXCHANGES
    routing_key: str = ""


# The shared topology: what broker definitions declare in a locked-down deployment
# (deploy/rabbitmq/definitions.json, checked against this by a test), and what Janus
# declares itself where it may (a development vhost). Ready queues are per dependency
# and always Janus's own.
SHARED_EXCHANGES = (
    ExchangeSpec(name=INTAKE_EXCHANGE, type=aio_pika.ExchangeType.TOPIC),
    ExchangeSpec(name=READY_EXCHANGE, type=aio_pika.ExchangeType.DIRECT),
    # The alternate exchange first: definitions and declarations follow this order.
    ExchangeSpec(name=UNROUTABLE_EXCHANGE, type=aio_pika.ExchangeType.FANOUT),
    ExchangeSpec(
        name=RESULTS_EXCHANGE,
        type=aio_pika.ExchangeType.TOPIC,
        arguments={"alternate-exchange": UNROUTABLE_EXCHANGE},
    ),
    ExchangeSpec(name=RETURNED_EXCHANGE, type=aio_pika.ExchangeType.FANOUT),
    ExchangeSpec(name=OUTCOMES_EXCHANGE, type=aio_pika.ExchangeType.TOPIC),
)
SHARED_QUEUES = (
    QueueSpec(name=INTAKE_QUEUE, bound_to=INTAKE_EXCHANGE, routing_key="#"),
    QueueSpec(name=UNROUTABLE_QUEUE, bound_to=UNROUTABLE_EXCHANGE),
    QueueSpec(name=RETURNED_QUEUE, bound_to=RETURNED_EXCHANGE),
    QueueSpec(name=REJECTED_QUEUE),
)

# The type of every queue Janus declares (the policy's `queue_type`). Classic queues live on
# one node; quorum queues are replicated (Raft) and confirm a publish once a majority has it.
QueueType = Literal["quorum", "classic"]
QUEUE_TYPES: tuple[QueueType, ...] = ("quorum", "classic")
DEFAULT_QUEUE_TYPE: QueueType = "classic"  # what queues of earlier versions are (docs/decisions.md)


def queue_arguments(queue_type: QueueType) -> FieldTable:
    """A queue of `queue_type`. Classic queues are declared with no x-queue-type, as before
    there was a choice: RabbitMQ 3.x compares the argument with the one the queue was made with."""
    return {"x-queue-type": "quorum"} if queue_type == "quorum" else {}


def ready_queue_arguments(queue_type: QueueType) -> FieldTable:
    """Admissions that expire (per-message TTL) or are rejected go back to Janus. A quorum
    queue dead-letters at most once unless told otherwise: the at-least-once strategy keeps
    the message until janus.returned's queue confirms it, and RabbitMQ allows that strategy
    only with reject-publish overflow (no length limit is set, so nothing is refused for it)."""
    arguments: FieldTable = {**queue_arguments(queue_type), "x-dead-letter-exchange": RETURNED_EXCHANGE}
    if queue_type == "quorum":
        arguments["x-dead-letter-strategy"] = "at-least-once"
        arguments["x-overflow"] = "reject-publish"
    return arguments


READY_QUEUE_ARGUMENTS: FieldTable = ready_queue_arguments(DEFAULT_QUEUE_TYPE)


async def declare_ready_queue(
    channel: AbstractChannel, dependency: str, queue_type: QueueType = DEFAULT_QUEUE_TYPE
) -> AbstractQueue:
    """A dependency's ready queue: admissions that expire or are rejected go back to Janus."""
    queue = await channel.declare_queue(
        ready_queue(dependency), durable=True, arguments=ready_queue_arguments(queue_type)
    )
    await queue.bind(READY_EXCHANGE, routing_key=dependency)
    return queue


def queue_type_hint(name: str, vhost: str, queue_type: QueueType) -> str:
    other = "classic" if queue_type == "quorum" else "quorum"
    return (
        f"the queue {name!r} in vhost {vhost!r} exists as another type or with other arguments than "
        f"the policy's queue_type = {queue_type!r} asks (a {other} queue, as an earlier policy or "
        f"version made it). Either set queue_type = {other!r}, or migrate: stop the producers, the "
        f"workers and Janus, then `janus broker-upgrade --config PATH` (an AMQP user allowed to "
        f"declare and delete Janus's queues) moves every message of each such queue aside, "
        f"redeclares it as {queue_type} and moves them back (docs/operations.md, queue types)"
    )


async def declare_topology(
    connection: AbstractConnection,
    dependencies: Iterable[str],
    *,
    queue_type: QueueType = DEFAULT_QUEUE_TYPE,
    per_dependency_intake: bool = False,
) -> list[str]:
    """Make sure everything Janus needs exists (`_declare_topology`); BrokerError if the broker
    fails, TopologyConflict if a queue exists as another type. `per_dependency_intake` (member
    mode, docs/scale-out.md): each dependency's own intake queue instead of janus.q.intake."""
    with broker_errors("declaring the broker topology failed"):
        return await _declare_topology(connection, dependencies, queue_type, per_dependency_intake)


async def _declare_topology(
    connection: AbstractConnection,
    dependencies: Iterable[str],
    queue_type: QueueType,
    per_dependency_intake: bool = False,
) -> list[str]:
    """Make sure everything Janus needs exists; returns the names it had to declare.

    Shared exchanges and queues are first checked passively (which needs no permission):
    in a locked-down deployment the broker definitions declared them and Janus's user may
    not. Only what is missing is declared (and its queue bound), which needs configure
    rights: on a development vhost Janus therefore sets itself up. Ready and results queues
    of each dependency are declared every time (idempotent), with the rights Janus's user
    has on them. An existing janus.results of another type (the fanout of earlier versions)
    raises TopologyConflict, naming the fix: Janus never deletes it by itself; so does a queue
    of another queue type than `queue_type` (PRECONDITION_FAILED on its declaration).
    """
    declared: list[str] = []
    channel = await connection.channel()
    try:
        for exchange in SHARED_EXCHANGES:
            try:
                await channel.get_exchange(exchange.name, ensure=True)
            except ChannelNotFoundEntity:
                channel = await _reopen(connection, channel)
                await _declare_exchange(channel, exchange)
                declared.append(exchange.name)
            else:
                channel = await _check_results_exchange(connection, channel, exchange)
        for spec in SHARED_QUEUES:
            if per_dependency_intake and spec.name == INTAKE_QUEUE:
                continue  # one queue bound with "#" would keep a copy of all intake, unread
            try:
                await channel.get_queue(spec.name, ensure=True)
            except ChannelNotFoundEntity:
                channel = await _reopen(connection, channel)
                await declare_shared_queue(channel, spec, queue_type)
                declared.append(spec.name)
            else:
                channel = await _check_queue(connection, channel, spec, queue_type)
        for dependency in dependencies:
            for name, declare in (
                (ready_queue(dependency), declare_ready_queue),
                (results_queue(dependency), declare_results_queue),
                *([(intake_queue(dependency), declare_intake_queue)] if per_dependency_intake else []),
            ):
                try:
                    await declare(channel, dependency, queue_type)
                except ChannelPreconditionFailed as exc:
                    raise TopologyConflict(
                        queue_type_hint(name, connection_vhost(connection), queue_type)
                    ) from exc
    finally:
        if not channel.is_closed:
            await channel.close()
    return declared


async def declare_intake_queue(
    channel: AbstractChannel, dependency: str, queue_type: QueueType = DEFAULT_QUEUE_TYPE
) -> AbstractQueue:
    """A dependency's own intake queue (member mode): what producers publish with its name as key."""
    queue = await channel.declare_queue(
        intake_queue(dependency), durable=True, arguments=queue_arguments(queue_type)
    )
    await queue.bind(INTAKE_EXCHANGE, routing_key=dependency)
    return queue


async def declare_results_queue(
    channel: AbstractChannel, dependency: str, queue_type: QueueType = DEFAULT_QUEUE_TYPE
) -> AbstractQueue:
    """A dependency's results queue: only results published with its name as routing key."""
    queue = await channel.declare_queue(
        results_queue(dependency), durable=True, arguments=queue_arguments(queue_type)
    )
    await queue.bind(RESULTS_EXCHANGE, routing_key=dependency)
    return queue


async def declare_shared_queue(
    channel: AbstractChannel, spec: QueueSpec, queue_type: QueueType
) -> AbstractQueue:
    queue = await channel.declare_queue(spec.name, durable=True, arguments=queue_arguments(queue_type))
    if spec.bound_to is not None:
        await queue.bind(spec.bound_to, routing_key=spec.routing_key)
    return queue


async def _check_queue(
    connection: AbstractConnection, channel: AbstractChannel, spec: QueueSpec, queue_type: QueueType
) -> AbstractChannel:
    """A passive declare accepts a queue of any type: declare it as it must be. ACCESS_REFUSED
    means a locked-down vhost, whose definitions are trusted (rendered with the same queue_type)."""
    try:
        await channel.declare_queue(spec.name, durable=True, arguments=queue_arguments(queue_type))
    except ChannelPreconditionFailed as exc:
        raise TopologyConflict(queue_type_hint(spec.name, connection_vhost(connection), queue_type)) from exc
    except ChannelAccessRefused:
        pass
    return await _reopen(connection, channel) if channel.is_closed else channel


async def _declare_exchange(channel: AbstractChannel, exchange: ExchangeSpec) -> None:
    await channel.declare_exchange(exchange.name, exchange.type, durable=True, arguments=exchange.arguments)


def upgrade_hint(vhost: str) -> str:
    return (
        f"the exchange {RESULTS_EXCHANGE!r} in vhost {vhost!r} exists with another type or arguments "
        f"(the fanout of Janus before results were routed per dependency). Delete it once, with "
        f"what it feeds: stop the workers, let Janus empty {LEGACY_RESULTS_QUEUE!r}, stop Janus, then "
        f"`janus broker-upgrade --config PATH` (an AMQP user allowed to delete it; or the broker "
        f"definitions, docs/security.md), and start the new Janus and workers"
    )


async def _check_results_exchange(
    connection: AbstractConnection, channel: AbstractChannel, exchange: ExchangeSpec
) -> AbstractChannel:
    """A passive declare accepts an exchange of any type: redeclare janus.results as it must be.

    PRECONDITION_FAILED means it differs (an old fanout would deliver every result to every
    dependency's queue). ACCESS_REFUSED means a locked-down vhost, whose definitions are
    trusted (docs/security.md says how to upgrade them).
    """
    if exchange.name != RESULTS_EXCHANGE:
        return channel
    try:
        await _declare_exchange(channel, exchange)
    except ChannelPreconditionFailed as exc:
        raise TopologyConflict(upgrade_hint(connection_vhost(connection))) from exc
    except ChannelAccessRefused:
        pass
    return await _reopen(connection, channel) if channel.is_closed else channel


def connection_vhost(connection: AbstractConnection) -> str:
    url = getattr(connection, "url", None)  # aio_pika.Connection has it; its interface does not say
    path = str(getattr(url, "path", "/"))
    return unquote(path[1:]) if path not in ("", "/") else "/"


async def upgrade_results_exchange(connection: AbstractConnection) -> list[str]:
    """Delete the fanout janus.results of earlier versions and its queue janus.q.results, once
    (`_upgrade_results_exchange`); BrokerError if the broker fails."""
    with broker_errors("upgrading the broker topology failed"):
        return await _upgrade_results_exchange(connection)


async def _upgrade_results_exchange(connection: AbstractConnection) -> list[str]:
    """Delete the fanout janus.results of earlier versions and its queue janus.q.results, once.

    Refuses while janus.q.results still holds results (they would be lost: let the old Janus
    consume them first). Returns what it deleted; declare_topology then declares the new one.
    """
    deleted: list[str] = []
    channel = await connection.channel()
    try:
        try:
            queue = await channel.declare_queue(LEGACY_RESULTS_QUEUE, passive=True)
        except ChannelNotFoundEntity:
            channel = await _reopen(connection, channel)
        else:
            waiting = queue.declaration_result.message_count or 0
            if waiting:
                raise TopologyConflict(
                    f"{LEGACY_RESULTS_QUEUE!r} still holds {waiting} results: let the old Janus take "
                    f"them (stop the workers first), then upgrade"
                )
            await channel.queue_delete(LEGACY_RESULTS_QUEUE, if_empty=True)
            deleted.append(LEGACY_RESULTS_QUEUE)
        try:
            await channel.get_exchange(RESULTS_EXCHANGE, ensure=True)
        except ChannelNotFoundEntity:
            channel = await _reopen(connection, channel)
        else:
            await channel.exchange_delete(RESULTS_EXCHANGE)
            deleted.append(RESULTS_EXCHANGE)
    finally:
        if not channel.is_closed:
            await channel.close()
    return deleted


async def _reopen(connection: AbstractConnection, channel: AbstractChannel) -> AbstractChannel:
    """A failed passive declare closes its channel: carry on with a new one."""
    if not channel.is_closed:
        await channel.close()
    return await connection.channel()


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
