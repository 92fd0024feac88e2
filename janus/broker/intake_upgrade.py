"""Intake per dependency for member mode (docs/scale-out.md), and `janus broker-upgrade --scale-out`/`--back`.

Producers keep publishing to `janus.intake` with the dependency as routing key. In member mode
that exchange feeds, through one exchange-to-exchange binding with "#", an internal topic
exchange `janus.intake.partitioned`; each dependency's queue `janus.q.intake.<dependency>` is
bound to it with its name, and its alternate exchange `janus.intake.unrouted` (fanout) takes
whatever routing key no dependency is bound with, into `janus.q.intake-unrouted`.

Why an inner exchange rather than an alternate exchange on `janus.intake` itself: RabbitMQ
cannot change an existing exchange's arguments, so that would mean deleting and declaring
`janus.intake` again (producers' publishes fail while it is absent, and its bindings go with
it), or a policy (outside AMQP, one policy per exchange, invisible to a passive declare). The
inner exchange is added and removed by binding alone: at no instant does a publish go nowhere
(docs/decisions.md, Scale-out). The unrouted queue's name cannot be a dependency's intake
queue: those are "janus.q.intake." + a name, this one has a "-" where they have the ".".

The single intake queue of one leader, `janus.q.intake` bound with "#", must not exist beside
the partitioned path: it would keep a copy of every job that nobody reads. Its presence is what
tells a broker not upgraded (or rolled back) apart from one ready for member mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from aio_pika.exceptions import ChannelNotFoundEntity
from aiormq.exceptions import ChannelAccessRefused, ChannelPreconditionFailed
from pamqp.common import FieldTable

from janus.broker import broker_errors, queue_types, topology
from janus.broker.topology import QueueType
from janus.errors import TopologyConflict

PARTITIONED_EXCHANGE = f"{topology.PREFIX}.intake.partitioned"  # internal topic, fed by janus.intake "#"
INTAKE_UNROUTED_EXCHANGE = f"{topology.PREFIX}.intake.unrouted"  # internal fanout: the one above's AE
INTAKE_UNROUTED_QUEUE = f"{topology.PREFIX}.q.intake-unrouted"  # read by the owner of the global work
PARTITIONED_ARGUMENTS: FieldTable = {"alternate-exchange": INTAKE_UNROUTED_EXCHANGE}
UPGRADE_FLAG = "--scale-out"
DRAIN_WINDOW = 200  # messages republished, then confirmed together, before they are acked
DRAIN_WAIT = 5.0  # seconds for the next message of a queue being emptied


def upgrade_hint(vhost: str) -> str:
    return (
        f"the broker (vhost {vhost!r}) is not set up for member mode; stop every `janus run`, then run "
        f"`janus broker-upgrade {UPGRADE_FLAG} --config PATH` (docs/operations.md, Scale-out)"
    )


async def declare_partitioned_intake(
    connection: AbstractConnection, dependencies: list[str], queue_type: QueueType
) -> None:
    """Member mode's intake: the partitioned path and each dependency's queue, declared where
    Janus may (a locked-down vhost's definitions declare the shared parts), then checked.

    Raises TopologyConflict with the way out while `janus.q.intake` exists (a deployment not
    upgraded: binding the partitioned path beside it would copy every job into a queue nobody
    reads), or when a queue exists as another type; BrokerError if the broker fails."""
    with broker_errors("declaring the partitioned intake failed"):
        if await _queue_exists(connection, topology.INTAKE_QUEUE):
            raise TopologyConflict(
                f"{topology.INTAKE_QUEUE!r} exists: " + upgrade_hint(topology.connection_vhost(connection))
            )
        await _declare(connection, dependencies, queue_type)
        await _check(connection, dependencies)


async def check_partitioned_intake(connection: AbstractConnection, dependencies: list[str]) -> None:
    """TopologyConflict, with a one-line hint, unless the broker is ready for member mode: the
    partitioned path and every dependency's intake queue exist, and `janus.q.intake` does not.
    Passive declares only: no permission needed. BrokerError if the broker fails."""
    with broker_errors("checking the partitioned intake failed"):
        await _check(connection, dependencies)


async def is_partitioned(connection: AbstractConnection) -> bool:
    """Whether `janus broker-upgrade --scale-out` has run here (and no `--back` since)."""
    with broker_errors("checking the partitioned intake failed"):
        return await _exchange_exists(connection, PARTITIONED_EXCHANGE)


async def _check(connection: AbstractConnection, dependencies: list[str]) -> None:
    vhost = topology.connection_vhost(connection)
    if await _queue_exists(connection, topology.INTAKE_QUEUE):
        raise TopologyConflict(f"{topology.INTAKE_QUEUE!r} exists: " + upgrade_hint(vhost))
    for name in (PARTITIONED_EXCHANGE, INTAKE_UNROUTED_EXCHANGE):
        if not await _exchange_exists(connection, name):
            raise TopologyConflict(f"no exchange {name!r}: " + upgrade_hint(vhost))
    for name in [INTAKE_UNROUTED_QUEUE, *map(topology.intake_queue, dependencies)]:
        if not await _queue_exists(connection, name):
            raise TopologyConflict(f"no queue {name!r}: " + upgrade_hint(vhost))


async def _declare(
    connection: AbstractConnection, dependencies: list[str], queue_type: QueueType, *, convert: bool = False
) -> None:
    """Declare (idempotently) the alternate exchange, its queue, the inner exchange, each
    dependency's queue bound to it, and, last, the binding from janus.intake: every route out of
    the inner exchange exists before anything flows into it. What Janus's user may not declare
    or bind (ACCESS_REFUSED: a locked-down vhost) is left to the definitions. `convert`: first
    redeclare the intake queues of another type than `queue_type`, their messages kept."""
    vhost = topology.connection_vhost(connection)
    async with _channel(connection) as channel:
        await _tolerate_refusal(
            channel,
            lambda ch: ch.declare_exchange(
                INTAKE_UNROUTED_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True, internal=True
            ),
        )
    async with _channel(connection) as channel:
        try:
            await _tolerate_refusal(
                channel,
                lambda ch: ch.declare_exchange(
                    PARTITIONED_EXCHANGE,
                    aio_pika.ExchangeType.TOPIC,
                    durable=True,
                    internal=True,
                    arguments=PARTITIONED_ARGUMENTS,
                ),
            )
        except ChannelPreconditionFailed as exc:
            raise TopologyConflict(
                f"the exchange {PARTITIONED_EXCHANGE!r} in vhost {vhost!r} exists with other properties "
                f"than an internal topic exchange whose alternate exchange is {INTAKE_UNROUTED_EXCHANGE!r}: "
                f"delete it, then `janus broker-upgrade {UPGRADE_FLAG}`"
            ) from exc
    if convert:
        await _convert_intake_queues(connection, dependencies, queue_type)
    for name, exchange, key in _intake_queues(dependencies):
        async with _channel(connection) as channel:
            try:
                await _tolerate_refusal(
                    channel,
                    partial(
                        _declare_bound_queue, name=name, exchange=exchange, key=key, queue_type=queue_type
                    ),
                )
            except ChannelPreconditionFailed as exc:
                raise TopologyConflict(topology.queue_type_hint(name, vhost, queue_type)) from exc
    async with _channel(connection) as channel:
        await _tolerate_refusal(
            channel,
            lambda ch: _bind_exchange(ch, PARTITIONED_EXCHANGE, topology.INTAKE_EXCHANGE),
        )


async def retire_intake_queue(connection: AbstractConnection, dependency: str) -> int:
    """A dependency gone from the policy: its queue unbound from the partitioned path (its jobs
    from now on go to the unrouted queue and are set aside, as one leader sets aside a job of an
    unknown dependency), and deleted once empty. Returns how many jobs still wait in it (0: gone,
    or never there); call again after they are read. BrokerError if the broker fails."""
    name = topology.intake_queue(dependency)
    with broker_errors(f"retiring the intake queue of {dependency!r} failed"):
        if not await _queue_exists(connection, name):
            return 0
        async with _channel(connection) as channel:
            queue = await channel.declare_queue(name, passive=True)
            await queue.unbind(PARTITIONED_EXCHANGE, routing_key=dependency)
            await queue.unbind(topology.INTAKE_EXCHANGE, routing_key=dependency)  # a no-op if not bound
            left = (await channel.declare_queue(name, passive=True)).declaration_result.message_count or 0
            if not left:
                await channel.queue_delete(name)
            return left


def _intake_queues(dependencies: list[str]) -> list[tuple[str, str, str]]:
    """(queue, the exchange it is bound to, routing key) of member mode's intake."""
    queues = [(INTAKE_UNROUTED_QUEUE, INTAKE_UNROUTED_EXCHANGE, "")]
    return queues + [(topology.intake_queue(d), PARTITIONED_EXCHANGE, d) for d in dependencies]


async def _declare_bound_queue(
    channel: AbstractChannel, *, name: str, exchange: str, key: str, queue_type: QueueType
) -> AbstractQueue:
    queue = await channel.declare_queue(name, durable=True, arguments=topology.queue_arguments(queue_type))
    await queue.bind(exchange, routing_key=key)
    return queue


async def _bind_exchange(channel: AbstractChannel, destination: str, source: str) -> None:
    inner = await channel.get_exchange(destination, ensure=False)
    await inner.bind(source, routing_key="#")


async def _unbind_exchange(channel: AbstractChannel, destination: str, source: str) -> None:
    inner = await channel.get_exchange(destination, ensure=False)
    await inner.unbind(source, routing_key="#")


async def _tolerate_refusal(
    channel: AbstractChannel, action: Callable[[AbstractChannel], Awaitable[object]]
) -> None:
    """Run `action(channel)`; ACCESS_REFUSED means a locked-down vhost whose definitions own
    what it declares or binds (`_check` then says whether they do)."""
    with suppress(ChannelAccessRefused):
        await action(channel)


@dataclass(kw_only=True, slots=True)
class Moved:
    """What an upgrade or a rollback did: messages moved per queue drained, and what it deleted."""

    moved: dict[str, int] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)


async def to_partitioned(
    connection: AbstractConnection, dependencies: list[str], queue_type: QueueType
) -> Moved:
    """`janus broker-upgrade --scale-out`: the partitioned path and every dependency's intake
    queue, then janus.q.intake unbound, emptied into janus.intake again (each message with its
    routing key, confirmed before it is acked) and deleted. Idempotent; a run stopped midway is
    finished by the next. Janus must be stopped (a consumer on janus.q.intake is refused)."""
    with broker_errors("upgrading the intake to member mode failed"):
        single = await _queue_exists(connection, topology.INTAKE_QUEUE)
        if single:
            async with _channel(connection) as channel:
                _refuse_consumers(await channel.declare_queue(topology.INTAKE_QUEUE, passive=True))
        await _declare(connection, dependencies, queue_type, convert=True)
        done = Moved()
        if not single:
            return done
        async with _channel(connection) as channel:
            queue = await channel.declare_queue(topology.INTAKE_QUEUE, passive=True)
            # The inner exchange is bound already: from here a job reaches its dependency's
            # queue, and until this unbind also janus.q.intake (a duplicate, by job_id).
            await queue.unbind(topology.INTAKE_EXCHANGE, routing_key="#")
        done.moved[topology.INTAKE_QUEUE] = await _drain(connection, topology.INTAKE_QUEUE)
        await _delete_empty(connection, topology.INTAKE_QUEUE)
        done.deleted.append(topology.INTAKE_QUEUE)
        return done


async def to_single(connection: AbstractConnection, dependencies: list[str], queue_type: QueueType) -> Moved:
    """`janus broker-upgrade --back`: janus.q.intake bound with "#" again, then the partitioned
    path unbound, each dependency's intake queue and the unrouted one emptied into janus.intake
    (now routed to janus.q.intake only), and deleted with the two exchanges. Idempotent. The
    member-mode processes must be stopped (a consumer on a queue to empty is refused). Only
    the `dependencies` named are drained: a queue of a dependency no longer configured is left."""
    with broker_errors("rolling the intake back to one queue failed"):
        names = [*map(topology.intake_queue, dependencies), INTAKE_UNROUTED_QUEUE]
        present = [name for name in names if await _queue_exists(connection, name)]
        for name in present:  # before anything changes: a refused run leaves the broker as it was
            async with _channel(connection) as channel:
                _refuse_consumers(await channel.declare_queue(name, passive=True))
        spec = next(s for s in topology.SHARED_QUEUES if s.name == topology.INTAKE_QUEUE)
        async with _channel(connection) as channel:
            await topology.declare_shared_queue(channel, spec, queue_type)
        done = Moved()
        if await _exchange_exists(connection, PARTITIONED_EXCHANGE):
            async with _channel(connection) as channel:
                await _unbind_exchange(channel, PARTITIONED_EXCHANGE, topology.INTAKE_EXCHANGE)
        for dependency in dependencies:
            # A dependency's queue bound to janus.intake itself (as well): unbound too, or its
            # drain would route back into it. Unbinding what is not bound is a no-op.
            if topology.intake_queue(dependency) in present:
                async with _channel(connection) as channel:
                    queue = await channel.declare_queue(topology.intake_queue(dependency), passive=True)
                    await queue.unbind(topology.INTAKE_EXCHANGE, routing_key=dependency)
        for name in present:
            done.moved[name] = await _drain(connection, name)
            await _delete_empty(connection, name)
            done.deleted.append(name)
        for exchange in (PARTITIONED_EXCHANGE, INTAKE_UNROUTED_EXCHANGE):
            if await _exchange_exists(connection, exchange):
                async with _channel(connection) as channel:
                    await channel.exchange_delete(exchange)
                done.deleted.append(exchange)
        return done


def _refuse_consumers(queue: AbstractQueue) -> None:
    consumers = queue.declaration_result.consumer_count or 0
    if consumers:
        raise TopologyConflict(
            f"{queue.name!r} has {consumers} consumer(s): stop every `janus run` first (producers and "
            f"workers may keep running), then run `janus broker-upgrade` again"
        )


async def _drain(connection: AbstractConnection, name: str) -> int:
    """Every message of the queue `name` published again to janus.intake with its routing key
    (mandatory, confirmed), then acked: a crash in between leaves a duplicate, never a loss.

    Consumed with a prefetch and confirmed in windows of DRAIN_WINDOW: a get and a confirm per
    message made the stop window a minute for 3,000 jobs on the loaded test machine. The queue is
    unbound, so its depth only falls: each round takes what the depth said, until it says 0."""
    moved = 0
    async with _channel(connection, confirms=True) as channel:
        await channel.set_qos(prefetch_count=DRAIN_WINDOW)
        intake = await channel.get_exchange(topology.INTAKE_EXCHANGE, ensure=True)
        while left := (await channel.declare_queue(name, passive=True)).declaration_result.message_count:
            source = await channel.get_queue(name, ensure=False)
            async with source.iterator() as messages:
                window: list[AbstractIncomingMessage] = []
                while left:
                    try:
                        message = await asyncio.wait_for(anext(messages), DRAIN_WAIT)
                    except TimeoutError:
                        break  # fewer than the depth said (taken meanwhile): count again
                    window.append(message)
                    left -= 1
                    if len(window) == DRAIN_WINDOW or not left:
                        moved += await _republish(intake, window)
                        window = []
                moved += await _republish(intake, window)
    return moved


async def _republish(intake: AbstractExchange, window: list[AbstractIncomingMessage]) -> int:
    """Publish `window` to janus.intake, await every confirm, then ack it all. A returned publish
    raises (on_return_raises): nothing of the window is acked, it goes back to its queue."""
    if not window:
        return 0
    await asyncio.gather(
        *(
            intake.publish(
                queue_types.copy_message(message), routing_key=message.routing_key or "", mandatory=True
            )
            for message in window
        )
    )
    await window[-1].ack(multiple=True)
    return len(window)


async def _delete_empty(connection: AbstractConnection, name: str) -> None:
    """Delete the drained queue `name`; a message that reached it meanwhile stops the run (kept)."""
    async with _channel(connection) as channel:
        left = (await channel.declare_queue(name, passive=True)).declaration_result.message_count or 0
        if left:
            raise TopologyConflict(
                f"{left} messages reached {name!r} while it was being emptied (is a binding left, or a "
                f"process still publishing to it?): run `janus broker-upgrade` again; nothing is lost"
            )
        await channel.queue_delete(name)


async def _convert_intake_queues(
    connection: AbstractConnection, dependencies: list[str], queue_type: QueueType
) -> dict[str, int]:
    """The intake queues of another type than `queue_type` converted as queue_types does the others."""
    converted: dict[str, int] = {}
    for name, exchange, key in _intake_queues(dependencies):
        queue = queue_types.ConvertibleQueue(
            name=name,
            arguments=topology.queue_arguments(queue_type),
            declare=partial(
                _declare_bound_queue, name=name, exchange=exchange, key=key, queue_type=queue_type
            ),
        )
        if await queue_types.needs_conversion(connection, queue):
            converted[name] = await queue_types.convert_queue(connection, queue)
    return converted


async def _queue_exists(connection: AbstractConnection, name: str) -> bool:
    async with _channel(connection) as channel:
        try:
            await channel.declare_queue(name, passive=True)
        except ChannelNotFoundEntity:
            return False
    return True


async def _exchange_exists(connection: AbstractConnection, name: str) -> bool:
    async with _channel(connection) as channel:
        try:
            await channel.get_exchange(name, ensure=True)
        except ChannelNotFoundEntity:
            return False
    return True


@asynccontextmanager
async def _channel(
    connection: AbstractConnection, *, confirms: bool = False
) -> AsyncIterator[AbstractChannel]:
    """A channel of its own per step: a refused or failed passive declare closes it."""
    channel = await connection.channel(publisher_confirms=confirms, on_return_raises=confirms)
    try:
        yield channel
    finally:
        if not channel.is_closed:
            await channel.close()
