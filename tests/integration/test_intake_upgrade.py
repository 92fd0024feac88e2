"""Member mode's intake on the real broker: one queue per dependency, unknown routing keys kept
aside, `janus broker-upgrade --scale-out` moving what waits in janus.q.intake without losing a
job (also while producers publish), idempotent, refused while Janus consumes, and `--back`."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.exceptions import DeliveryError

from janus import cli
from janus.broker import intake_upgrade, queue_types, topology
from janus.broker.intake_upgrade import INTAKE_UNROUTED_QUEUE
from janus.broker.topology import QueueType
from janus.client import Producer, Worker
from janus.errors import TopologyConflict
from tests.integration.harness import QUEUE_TYPE, RecordLog, job_rows, make_config, running_janus, succeed
from tests.integration.test_misbehaving_workers import rejected_messages
from tests.integration.test_quorum_queues import queue_types_in
from tests.services import Services

pytestmark = pytest.mark.integration

DEPENDENCIES = ["api", "mail"]


async def publish(channel: AbstractChannel, key: str, body: str, **properties: object) -> None:
    intake = await channel.get_exchange(topology.INTAKE_EXCHANGE, ensure=True)
    await intake.publish(aio_pika.Message(body.encode(), **properties), routing_key=key, mandatory=True)  # type: ignore[arg-type]


async def take_all(channel: AbstractChannel, queue: str) -> list[tuple[str, str]]:
    """(body, routing key) of every message of `queue`, in order, acked."""
    source = await channel.get_queue(queue, ensure=True)
    got = []
    while (message := await source.get(no_ack=True, fail=False)) is not None:
        got.append((message.body.decode(), message.routing_key or ""))
    return got


async def ignore(message: AbstractIncomingMessage) -> None:
    """A consumer that holds what it is given (as a running Janus would, for a while)."""


async def exists(connection: AbstractConnection, queue: str) -> bool:
    channel = await connection.channel()
    try:
        await channel.declare_queue(queue, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return False
    await channel.close()
    return True


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_the_upgrade_moves_every_waiting_job_to_its_dependency_and_unknown_keys_aside(
    services: Services, vhost: str, queue_type: QueueType
) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, DEPENDENCIES, queue_type=queue_type)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        for i in range(30):
            await publish(channel, "api", f"api-{i}", headers={"n": i}, message_id=f"api-{i}")
        for i in range(20):
            await publish(channel, "mail", f"mail-{i}")
        for i in range(5):
            await publish(channel, "ghost", f"ghost-{i}")  # no such dependency

        with pytest.raises(TopologyConflict, match="janus broker-upgrade --scale-out"):
            await intake_upgrade.check_partitioned_intake(connection, DEPENDENCIES)

        done = await intake_upgrade.to_partitioned(connection, DEPENDENCIES, queue_type)
        assert done.moved == {topology.INTAKE_QUEUE: 55}
        assert done.deleted == [topology.INTAKE_QUEUE]
        assert not await exists(connection, topology.INTAKE_QUEUE)
        await intake_upgrade.check_partitioned_intake(connection, DEPENDENCIES)

        # Jobs published after the upgrade go the same way; a producer's mandatory publish
        # with an unknown key is taken (by the alternate exchange), not returned.
        await publish(channel, "api", "api-after")
        await publish(channel, "nobody", "nobody-after")
        # Run twice: nothing to do, nothing moved twice.
        again = await intake_upgrade.to_partitioned(connection, DEPENDENCIES, queue_type)
        assert again.moved == {}
        assert again.deleted == []
        assert (
            await topology.declare_topology(connection, DEPENDENCIES, queue_type=queue_type, partitioned=True)
            == []
        )
        assert not await exists(connection, topology.INTAKE_QUEUE), "not declared again in member mode"

        source = await channel.get_queue(topology.intake_queue("api"), ensure=True)
        first = await source.get(no_ack=True)
        # A quorum queue adds x-delivery-count to what it delivers: the rest is the producer's.
        headers = {k: v for k, v in first.headers.items() if k != "x-delivery-count"}
        assert (headers, first.message_id) == ({"n": 0}, "api-0"), "properties kept"
        api = await take_all(channel, topology.intake_queue("api"))
        assert api == [(f"api-{i}", "api") for i in range(1, 30)] + [("api-after", "api")]
        assert await take_all(channel, topology.intake_queue("mail")) == [
            (f"mail-{i}", "mail") for i in range(20)
        ]
        unrouted = await take_all(channel, INTAKE_UNROUTED_QUEUE)
        assert unrouted == [(f"ghost-{i}", "ghost") for i in range(5)] + [("nobody-after", "nobody")]
    types = await queue_types_in(services, vhost)
    intake = [topology.intake_queue("api"), topology.intake_queue("mail"), INTAKE_UNROUTED_QUEUE]
    assert {name: types.get(name) for name in intake} == dict.fromkeys(intake, queue_type)


async def test_back_binds_the_one_queue_again_and_moves_every_dependencys_intake_into_it(vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, DEPENDENCIES, partitioned=True)
        await intake_upgrade.declare_partitioned_intake(connection, DEPENDENCIES, "classic")
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        for i in range(10):
            await publish(channel, DEPENDENCIES[i % 2], f"job-{i}")
        await publish(channel, "ghost", "ghost-0")

        done = await intake_upgrade.to_single(connection, DEPENDENCIES, "classic")
        assert done.moved == {
            topology.intake_queue("api"): 5,
            topology.intake_queue("mail"): 5,
            INTAKE_UNROUTED_QUEUE: 1,
        }
        assert not await intake_upgrade.is_partitioned(connection)
        for name in (topology.intake_queue("api"), topology.intake_queue("mail"), INTAKE_UNROUTED_QUEUE):
            assert not await exists(connection, name)
        await publish(channel, "ghost", "after")  # "#" again: everything, known or not
        got = await take_all(channel, topology.INTAKE_QUEUE)
        assert sorted(got) == sorted(
            [(f"job-{i}", DEPENDENCIES[i % 2]) for i in range(10)]
            + [("ghost-0", "ghost"), ("after", "ghost")]
        )
        with pytest.raises(TopologyConflict, match="--scale-out"):
            await intake_upgrade.check_partitioned_intake(connection, DEPENDENCIES)
        again = await intake_upgrade.to_single(connection, DEPENDENCIES, "classic")
        assert again.moved == {}
        assert again.deleted == []


async def test_member_mode_refuses_a_broker_not_upgraded_and_binds_nothing(vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, DEPENDENCIES)
        with pytest.raises(TopologyConflict, match=r"janus broker-upgrade --scale-out"):
            await intake_upgrade.declare_partitioned_intake(connection, DEPENDENCIES, "classic")
        assert not await intake_upgrade.is_partitioned(connection)
        assert not await exists(connection, topology.intake_queue("api"))


async def test_the_upgrade_is_refused_while_janus_consumes_the_one_queue(vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, DEPENDENCIES)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await publish(channel, "api", "waiting")
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=1)
        queue = await consumer.get_queue(topology.INTAKE_QUEUE, ensure=True)
        tag = await queue.consume(ignore)
        with pytest.raises(TopologyConflict, match="stop every `janus run`"):
            await intake_upgrade.to_partitioned(connection, DEPENDENCIES, "classic")
        assert not await intake_upgrade.is_partitioned(connection), "nothing done"
        await queue.cancel(tag)
        await consumer.close()


async def test_back_is_refused_while_a_member_consumes_and_changes_nothing(vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, DEPENDENCIES, partitioned=True)
        await intake_upgrade.declare_partitioned_intake(connection, DEPENDENCIES, "classic")
        consumer = await connection.channel()
        queue = await consumer.get_queue(topology.intake_queue("mail"), ensure=True)
        tag = await queue.consume(ignore)
        with pytest.raises(TopologyConflict, match="stop every `janus run`"):
            await intake_upgrade.to_single(connection, DEPENDENCIES, "classic")
        assert not await exists(connection, topology.INTAKE_QUEUE), "nothing done"
        await intake_upgrade.check_partitioned_intake(connection, DEPENDENCIES)
        await queue.cancel(tag)
        await consumer.close()


async def test_a_producer_publishing_through_the_upgrade_and_back_loses_nothing(vhost: str) -> None:
    """Confirmed, mandatory publishes all along: none returned, each found afterwards in the
    queue its routing key leads to (a duplicate allowed: Janus deduplicates by job_id)."""
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, DEPENDENCIES)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        for i in range(200):
            await publish(channel, "api", f"before-{i}")
        sent: list[str] = []
        returned: list[str] = []
        stop = asyncio.Event()

        async def produce() -> None:
            own = await connection.channel(publisher_confirms=True, on_return_raises=True)
            i = 0
            while not stop.is_set():
                body = f"during-{i}"
                try:
                    await publish(own, "api", body)
                except DeliveryError:
                    returned.append(body)
                else:
                    sent.append(body)
                i += 1

        producing = asyncio.create_task(produce())
        await asyncio.sleep(0.1)
        await intake_upgrade.to_partitioned(connection, DEPENDENCIES, "classic")
        await asyncio.sleep(0.1)
        upgraded_at = len(sent)
        await intake_upgrade.to_single(connection, DEPENDENCIES, "classic")
        await asyncio.sleep(0.1)
        stop.set()
        await producing
        assert returned == []
        got = Counter(body for body, key in await take_all(channel, topology.INTAKE_QUEUE))
        expected = {f"before-{i}" for i in range(200)} | set(sent)
        assert expected <= set(got), f"lost: {sorted(expected - set(got))[:5]}"
        assert set(got) <= expected
        duplicates = sum(count - 1 for count in got.values())
        print(
            f"published during: {len(sent)} ({upgraded_at} by the end of the upgrade); duplicates: {duplicates}"
        )


async def test_intake_queues_follow_the_policys_queue_type(services: Services, vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, DEPENDENCIES, queue_type="quorum", partitioned=True)
        await intake_upgrade.declare_partitioned_intake(connection, DEPENDENCIES, "quorum")
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await publish(channel, "mail", "kept")
        done = await intake_upgrade.to_partitioned(connection, DEPENDENCIES, "classic")
        assert done.moved == {}
        assert (await queue_types_in(services, vhost))[topology.intake_queue("mail")] == "classic"
        assert await take_all(channel, topology.intake_queue("mail")) == [("kept", "mail")]
        with pytest.raises(TopologyConflict, match=f"{INTAKE_UNROUTED_QUEUE}.* another type"):
            await intake_upgrade.declare_partitioned_intake(connection, DEPENDENCIES, "quorum")


async def test_converting_a_queues_type_keeps_each_messages_routing_key(vhost: str) -> None:
    """Janus refuses an intake whose routing key is not its dependency: a conversion that moved
    messages through the default exchange (routing key = the queue's name) would set every
    waiting job aside."""
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, DEPENDENCIES, queue_type="classic")
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await publish(channel, "api", "waiting")
        converted = await queue_types.convert_queues(connection, DEPENDENCIES, "quorum")
        assert converted[topology.INTAKE_QUEUE] == 1
        assert await take_all(channel, topology.INTAKE_QUEUE) == [("waiting", "api")]


async def test_the_command_upgrades_stays_upgraded_and_goes_back(
    vhost: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`janus broker-upgrade --scale-out`, then the plain command (which keeps member mode), then `--back`."""
    policy = tmp_path / "janus.toml"
    policy.write_text(
        f'amqp_url = "{vhost}"\ndatabase_url = "postgresql://unused@127.0.0.1/unused"\n'
        + "".join(f"[dependencies.{name}]\nconcurrency = 5\n" for name in DEPENDENCIES)
    )
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, DEPENDENCIES)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await publish(channel, "api", "waiting")

        def upgrade(*flags: str) -> str:
            assert cli.main(["broker-upgrade", *flags, "--config", str(policy)]) == 0
            return capsys.readouterr().out

        out = await asyncio.to_thread(upgrade, "--scale-out")
        assert f"moved 1 messages of {topology.INTAKE_QUEUE}" in out
        assert "member mode" in out
        await intake_upgrade.check_partitioned_intake(connection, DEPENDENCIES)
        out = await asyncio.to_thread(upgrade)
        assert "member mode" in out
        assert not await exists(connection, topology.INTAKE_QUEUE)
        await intake_upgrade.check_partitioned_intake(connection, DEPENDENCIES)
        out = await asyncio.to_thread(upgrade, "--back")
        assert f"moved 1 messages of {topology.intake_queue('api')}" in out
        assert await take_all(channel, topology.INTAKE_QUEUE) == [("waiting", "api")]
        assert not await intake_upgrade.is_partitioned(connection)


async def test_jobs_taken_through_the_upgrade_and_back_are_each_admitted_once(
    database: str, vhost: str
) -> None:
    """Jobs waiting before `--scale-out`, submitted between it and `--back` (some twice), then
    admitted by a single-leader Janus: each job once, its routing key accepted (a moved job whose
    key were the queue's name would be set aside), the unknown dependency set aside."""
    config = make_config(database, vhost, {name: {"lease_timeout": "10s"} for name in DEPENDENCIES})
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, DEPENDENCIES, queue_type=QUEUE_TYPE)
        async with await Producer.connect(vhost) as producer:
            for i in range(20):
                await producer.submit(f"early-{i}", DEPENDENCIES[i % 2])
            await producer.submit("lost-soul", "ghost")
            await intake_upgrade.to_partitioned(connection, DEPENDENCIES, QUEUE_TYPE)
            for i in range(5):
                await producer.submit(f"late-{i}", DEPENDENCIES[i % 2])
            for i in range(3):
                await producer.submit(f"early-{i}", DEPENDENCIES[i % 2])  # a producer's retry
            await intake_upgrade.to_single(connection, DEPENDENCIES, QUEUE_TYPE)
    log = RecordLog()
    async with running_janus(config):
        worker = Worker(vhost, dict.fromkeys(DEPENDENCIES, succeed), on_record=log.append)
        await worker.start()
        try:
            await log.wait_for(lambda _: len(log.succeeded()) == 25, timeout=60)
        finally:
            await worker.stop()
    admitted = Counter(record.job_id for record in log.records)
    assert set(admitted) == {f"early-{i}" for i in range(20)} | {f"late-{i}" for i in range(5)}
    assert set(admitted.values()) == {1}, "no job admitted twice"
    rows = await job_rows(database)
    assert {row["state"] for row in rows.values()} == {"succeeded"}
    assert len(rows) == 25
    [(body, headers)] = await rejected_messages(vhost, 1)
    assert b"lost-soul" in body
    assert headers[topology.REASON_HEADER] == "unknown_dependency"


async def test_a_dependency_gone_from_the_policy_has_its_queue_retired_once_read(vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, DEPENDENCIES, partitioned=True)
        await intake_upgrade.declare_partitioned_intake(connection, DEPENDENCIES, "classic")
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await publish(channel, "mail", "waiting")
        assert await intake_upgrade.retire_intake_queue(connection, "mail") == 1, "kept while it holds jobs"
        await publish(channel, "mail", "after")  # no longer a dependency: set aside, like any unknown key
        assert await take_all(channel, INTAKE_UNROUTED_QUEUE) == [("after", "mail")]
        assert await take_all(channel, topology.intake_queue("mail")) == [("waiting", "mail")]
        assert await intake_upgrade.retire_intake_queue(connection, "mail") == 0
        assert not await exists(connection, topology.intake_queue("mail"))
        assert await intake_upgrade.retire_intake_queue(connection, "mail") == 0, "idempotent"
        await intake_upgrade.check_partitioned_intake(connection, ["api"])


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


async def test_a_single_leader_refuses_a_broker_set_up_for_member_mode(database: str, vhost: str) -> None:
    """After `--scale-out`, a process without [scale_out] must not declare janus.q.intake again:
    bound with "#" beside the partitioned path, it would keep an unread copy of every job."""
    config = make_config(database, vhost, {name: {"lease_timeout": "10s"} for name in DEPENDENCIES})
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, DEPENDENCIES, queue_type=QUEUE_TYPE)
        await intake_upgrade.to_partitioned(connection, DEPENDENCIES, QUEUE_TYPE)
        with pytest.raises((TopologyConflict, BaseExceptionGroup)) as caught:
            async with running_janus(config):
                pass
        conflicts = [leaf for leaf in _leaves(caught.value) if isinstance(leaf, TopologyConflict)]
        assert conflicts, caught.value
        assert "broker-upgrade --back" in str(conflicts[0])
        assert not await exists(connection, topology.INTAKE_QUEUE)
