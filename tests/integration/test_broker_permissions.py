"""Least privilege at the broker: the definitions of deploy/rabbitmq/, loaded into a vhost of this test's own.

Users get names unique to the test run and are deleted at teardown (`guest` is never
touched). Each refusal is asserted to be the broker's ACCESS_REFUSED (reply code 403):
a publish without confirms is refused asynchronously, by closing the channel, so the
test waits for the channel's close reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import ChannelAccessRefused, ProbableAuthenticationError

from janus.broker import intake_upgrade, topology
from janus.broker.connection import broker_version
from janus.broker.definitions import render, roles, unchecked_cc_risk, worker_role
from janus.client import Producer, ReadyJob, Worker
from janus.config import load_config
from janus.protocol import encode_result
from tests.integration.harness import QUEUE_TYPE, RecordLog, job_rows, make_config, running_janus, succeed
from tests.integration.test_misbehaving_workers import rejected_messages
from tests.services import Services

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
DEPENDENCIES = ("api", "mail")  # each gets a worker user of its own: worker-api, worker-mail


@dataclass(frozen=True)
class LockedVhost:
    vhost: str
    users: dict[str, str]
    password: str
    host: str

    def url(self, role: str) -> str:
        return f"amqp://{self.users[role]}:{self.password}@{self.host}/{quote(self.vhost, safe='')}"


async def _import(services: Services, document: dict[str, object]) -> None:
    # The broker process reads the file itself: it must be readable by another user.
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o755)
        path = Path(directory) / "definitions.json"
        path.write_text(json.dumps(document))
        path.chmod(0o644)
        await services.local.ctl("import_definitions", str(path))


async def _connect_when_ready(url: str, timeout: float = 15.0) -> AbstractConnection:
    # import_definitions returns before the import is done: wait until the user may log in.
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await aio_pika.connect(url)
            except ProbableAuthenticationError:
                await asyncio.sleep(0.1)


@pytest.fixture
async def locked(services: Services) -> AsyncIterator[LockedVhost]:
    async with locked_vhost(services, scale_out=False) as vhost:
        yield vhost


@pytest.fixture
async def locked_scale_out(services: Services) -> AsyncIterator[LockedVhost]:
    """Definitions rendered for member mode: one intake queue per dependency (Janus declares
    them), the unrouted path, and no janus.q.intake."""
    async with locked_vhost(services, scale_out=True) as vhost:
        yield vhost


@asynccontextmanager
async def locked_vhost(services: Services, *, scale_out: bool) -> AsyncIterator[LockedVhost]:
    tag = uuid.uuid4().hex[:8]
    vhost = f"janus-test-locked-{tag}"
    users = {role: f"janus-test-{tag}-{role}" for role in roles(DEPENDENCIES)}
    password = uuid.uuid4().hex
    host = services.local.amqp_base.rsplit("@", 1)[1]
    await services.create_vhost(vhost)  # also lets the test's admin (guest) in, for clean-up
    try:
        document = render(
            vhost=vhost,
            dependencies=DEPENDENCIES,
            users=users,
            passwords=dict.fromkeys(users, password),
            queue_type=QUEUE_TYPE,
            scale_out=scale_out,
        )
        await _import(services, document)
        locked = LockedVhost(vhost=vhost, users=users, password=password, host=host)
        for role in users:
            connection = await _connect_when_ready(locked.url(role))
            await connection.close()
        yield locked
    finally:
        await services.delete_vhost(vhost)
        for user in users.values():
            await services.local.ctl("delete_user", user, check=False)


async def assert_refused(
    connection: AbstractConnection, action: Callable[[AbstractChannel], Awaitable[object]]
) -> None:
    """`action` on a fresh channel ends with the broker closing it: ACCESS_REFUSED."""
    channel = await connection.channel()
    closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def on_close(_: object, exc: BaseException | None) -> None:
        if not closed.done():
            closed.set_result(exc)

    channel.close_callbacks.add(on_close)
    try:
        await action(channel)
    except ChannelAccessRefused as exc:
        reason: BaseException | None = exc
    else:
        reason = await asyncio.wait_for(closed, timeout=10)
    assert isinstance(reason, ChannelAccessRefused), (
        f"expected ACCESS_REFUSED, the channel closed with {reason!r}"
    )
    assert "ACCESS_REFUSED" in str(reason)


async def publish_unconfirmed(channel: AbstractChannel, exchange: str, routing_key: str = "api") -> None:
    raw = await channel.get_underlay_channel()
    await raw.basic_publish(
        b'{"job_id": "forged", "dependency": "api"}', exchange=exchange, routing_key=routing_key
    )


async def consume_one(channel: AbstractChannel, queue: str) -> None:
    raw = await channel.get_underlay_channel()
    await raw.basic_get(queue)


async def bind(channel: AbstractChannel, queue: str, exchange: str) -> None:
    raw = await channel.get_underlay_channel()
    await raw.queue_bind(queue, exchange, routing_key="#")


async def declare_janus_topology(locked: LockedVhost) -> None:
    connection = await aio_pika.connect(locked.url("janus"))
    async with connection:
        declared = await topology.declare_topology(connection, DEPENDENCIES, queue_type=QUEUE_TYPE)
        assert declared == [], "the definitions declare it all"


def test_the_committed_definitions_are_what_render_gives() -> None:
    # The deploy file is generated from janus.broker.topology, for config/janus.toml's dependencies:
    # `python -m janus.broker.definitions --dependency payments-api --dependency email
    #  > deploy/rabbitmq/definitions.json`.
    config = load_config(ROOT / "config" / "janus.toml")
    dependencies = [policy.name for policy in config.policies()]
    assert dependencies == ["payments-api", "email"]
    assert json.loads(DEFINITIONS.read_text()) == render(dependencies=dependencies)


async def test_a_worker_cannot_publish_where_janus_does_nor_bind(locked: LockedVhost) -> None:
    await declare_janus_topology(locked)
    worker = await aio_pika.connect(locked.url("worker"))
    async with worker:
        # Forging a job, or an admission straight into a ready queue (default exchange) or its exchange:
        await assert_refused(worker, lambda ch: publish_unconfirmed(ch, topology.INTAKE_EXCHANGE))
        await assert_refused(worker, lambda ch: publish_unconfirmed(ch, "", topology.ready_queue("api")))
        await assert_refused(worker, lambda ch: publish_unconfirmed(ch, topology.READY_EXCHANGE))
        await assert_refused(worker, lambda ch: publish_unconfirmed(ch, topology.RETURNED_EXCHANGE))
        # Tapping Janus's exchanges with a queue of its own, or re-routing a ready queue:
        await assert_refused(
            worker, lambda ch: bind(ch, topology.ready_queue("api"), topology.INTAKE_EXCHANGE)
        )
        await assert_refused(
            worker, lambda ch: bind(ch, topology.ready_queue("api"), topology.RESULTS_EXCHANGE)
        )
        await assert_refused(worker, lambda ch: ch.declare_queue("mine", durable=False))
        await assert_refused(worker, lambda ch: consume_one(ch, topology.INTAKE_QUEUE))
        await assert_refused(worker, lambda ch: consume_one(ch, topology.REJECTED_QUEUE))
        # What it may do: take admissions, report results.
        channel = await worker.channel()
        await consume_one(channel, topology.ready_queue("api"))
        await consume_one(channel, topology.ready_queue("mail"))
        # The generic worker has no topic permissions: any routing key (docs/security.md).
        await publish_unconfirmed(channel, topology.RESULTS_EXCHANGE, "mail")
        await channel.close()


async def publish_result(channel: AbstractChannel, routing_key: str) -> None:
    raw = await channel.get_underlay_channel()
    body = encode_result(job_id="forged", attempt=1, outcome="success")
    await raw.basic_publish(body, exchange=topology.RESULTS_EXCHANGE, routing_key=routing_key)


async def test_a_dependencys_worker_reports_and_takes_for_its_dependency_only(locked: LockedVhost) -> None:
    await declare_janus_topology(locked)
    worker = await aio_pika.connect(locked.url(worker_role("api")))
    async with worker:
        # A result routed to another dependency, or to none (the catch-all): refused by the
        # broker's topic permissions on janus.results, so it never reaches Janus.
        await assert_refused(worker, lambda ch: publish_result(ch, "mail"))
        await assert_refused(worker, lambda ch: publish_result(ch, ""))
        await assert_refused(worker, lambda ch: publish_result(ch, "api.x"))
        await assert_refused(worker, lambda ch: publish_result(ch, "#"))
        # Another dependency's admissions:
        await assert_refused(worker, lambda ch: consume_one(ch, topology.ready_queue("mail")))
        # Janus's queues and exchanges, as for the generic worker:
        await assert_refused(worker, lambda ch: consume_one(ch, topology.results_queue("api")))
        await assert_refused(worker, lambda ch: publish_unconfirmed(ch, topology.INTAKE_EXCHANGE))
        await assert_refused(
            worker, lambda ch: bind(ch, topology.ready_queue("api"), topology.RESULTS_EXCHANGE)
        )
        # What it may do: take its own admissions, report with its own key (confirmed).
        channel = await worker.channel(publisher_confirms=True)
        await consume_one(channel, topology.ready_queue("api"))
        results = await channel.get_exchange(topology.RESULTS_EXCHANGE, ensure=True)
        await results.publish(aio_pika.Message(b"{}"), routing_key="api")
        await channel.close()


async def test_a_producer_can_only_submit(locked: LockedVhost) -> None:
    await declare_janus_topology(locked)
    producer = await aio_pika.connect(locked.url("producer"))
    async with producer:
        await assert_refused(producer, lambda ch: publish_unconfirmed(ch, topology.RESULTS_EXCHANGE, ""))
        await assert_refused(producer, lambda ch: publish_unconfirmed(ch, topology.READY_EXCHANGE))
        await assert_refused(producer, lambda ch: consume_one(ch, topology.ready_queue("api")))
        await assert_refused(producer, lambda ch: consume_one(ch, topology.INTAKE_QUEUE))
        await assert_refused(producer, lambda ch: bind(ch, topology.INTAKE_QUEUE, topology.INTAKE_EXCHANGE))
    async with await Producer.connect(locked.url("producer")) as sdk:
        await sdk.submit("allowed", "api")  # confirmed: it may submit


async def test_monitoring_sees_depths_and_can_take_nothing(locked: LockedVhost) -> None:
    await declare_janus_topology(locked)
    monitoring = await aio_pika.connect(locked.url("monitoring"))
    async with monitoring:
        channel = await monitoring.channel()
        queue = await channel.declare_queue(topology.REJECTED_QUEUE, passive=True)
        assert queue.declaration_result.message_count == 0
        await channel.close()
        await assert_refused(monitoring, lambda ch: consume_one(ch, topology.REJECTED_QUEUE))
        await assert_refused(monitoring, lambda ch: consume_one(ch, topology.ready_queue("api")))
        await assert_refused(monitoring, lambda ch: publish_unconfirmed(ch, topology.INTAKE_EXCHANGE))


async def test_a_subscriber_gets_outcomes_in_its_own_queue_and_nothing_else(locked: LockedVhost) -> None:
    await declare_janus_topology(locked)
    mine = topology.SUBSCRIBER_QUEUE_PREFIX + "alerts"
    subscriber = await aio_pika.connect(locked.url("subscriber"))
    async with subscriber:
        channel = await subscriber.channel()
        queue = await channel.declare_queue(mine, durable=True)
        await queue.bind(topology.OUTCOMES_EXCHANGE, routing_key="*.dead")
        # Janus publishes an outcome (as it does after a commit): it reaches the subscriber's queue.
        janus = await aio_pika.connect(locked.url("janus"))
        async with janus:
            janus_channel = await janus.channel(publisher_confirms=True)
            outcomes = await janus_channel.get_exchange(topology.OUTCOMES_EXCHANGE, ensure=False)
            await outcomes.publish(aio_pika.Message(b'{"job_id": "j"}'), routing_key="api.dead")
        async with asyncio.timeout(10), queue.iterator(no_ack=True) as messages:
            message = await anext(messages)
        assert message.body == b'{"job_id": "j"}'
        await channel.close()
        await assert_refused(subscriber, lambda ch: bind(ch, mine, topology.READY_EXCHANGE))
        await assert_refused(subscriber, lambda ch: bind(ch, mine, topology.INTAKE_EXCHANGE))
        await assert_refused(subscriber, lambda ch: publish_unconfirmed(ch, topology.OUTCOMES_EXCHANGE))
        await assert_refused(subscriber, lambda ch: publish_unconfirmed(ch, topology.INTAKE_EXCHANGE))
        await assert_refused(subscriber, lambda ch: consume_one(ch, topology.INTAKE_QUEUE))
        await assert_refused(subscriber, lambda ch: consume_one(ch, topology.ready_queue("api")))
        await assert_refused(subscriber, lambda ch: consume_one(ch, topology.REJECTED_QUEUE))
        await assert_refused(subscriber, lambda ch: ch.declare_queue("not-a-subscriber-queue"))


async def test_janus_cannot_touch_the_definitions_topology(locked: LockedVhost) -> None:
    janus = await aio_pika.connect(locked.url("janus"))
    async with janus:
        await assert_refused(janus, lambda ch: ch.exchange_delete(topology.INTAKE_EXCHANGE))
        await assert_refused(janus, lambda ch: ch.queue_delete(topology.INTAKE_QUEUE))
        await assert_refused(janus, lambda ch: publish_unconfirmed(ch, topology.RESULTS_EXCHANGE, ""))


async def test_member_mode_intake_under_least_privilege(locked_scale_out: LockedVhost) -> None:
    """Janus declares and reads each dependency's intake queue; a producer still only writes to
    janus.intake (an unknown key lands in the unrouted queue); nobody else reads or taps intake."""
    locked = locked_scale_out
    janus = await aio_pika.connect(locked.url("janus"))
    async with janus:
        assert (
            await topology.declare_topology(janus, DEPENDENCIES, queue_type=QUEUE_TYPE, partitioned=True)
            == []
        )
        await intake_upgrade.declare_partitioned_intake(janus, list(DEPENDENCIES), QUEUE_TYPE)
        async with await Producer.connect(locked.url("producer")) as sdk:
            await sdk.submit("known", "api")
            await sdk.submit("unknown", "ghost")  # taken by the alternate exchange, not returned
        channel = await janus.channel()
        for queue, job_id in (
            (topology.intake_queue("api"), "known"),
            (intake_upgrade.INTAKE_UNROUTED_QUEUE, "unknown"),
        ):
            source = await channel.get_queue(queue, ensure=True)
            message = await source.get(no_ack=True, timeout=10)
            assert message.message_id == job_id
        await channel.close()
        # Janus may not reshape the shared path: the definitions own it.
        await assert_refused(janus, lambda ch: ch.exchange_delete(intake_upgrade.PARTITIONED_EXCHANGE))
        await assert_refused(janus, lambda ch: ch.queue_delete(intake_upgrade.INTAKE_UNROUTED_QUEUE))
    producer = await aio_pika.connect(locked.url("producer"))
    async with producer:
        await assert_refused(
            producer, lambda ch: publish_unconfirmed(ch, intake_upgrade.PARTITIONED_EXCHANGE)
        )
        await assert_refused(producer, lambda ch: consume_one(ch, topology.intake_queue("api")))
        await assert_refused(producer, lambda ch: consume_one(ch, intake_upgrade.INTAKE_UNROUTED_QUEUE))
    for role in ("worker", worker_role("api")):
        worker = await aio_pika.connect(locked.url(role))
        async with worker:
            await assert_refused(worker, lambda ch: consume_one(ch, topology.intake_queue("api")))
            await assert_refused(worker, lambda ch: consume_one(ch, intake_upgrade.INTAKE_UNROUTED_QUEUE))
            await assert_refused(
                worker, lambda ch: bind(ch, topology.intake_queue("api"), intake_upgrade.PARTITIONED_EXCHANGE)
            )
            await assert_refused(
                worker, lambda ch: ch.declare_queue(topology.intake_queue("mine"), durable=True)
            )


async def test_janus_works_end_to_end_under_its_own_user(database: str, locked: LockedVhost) -> None:
    """Janus, producer and worker each with its own user: jobs flow, expired admissions come back,
    bad input is set aside, a forged result is set aside."""
    config = make_config(
        database,
        locked.url("janus"),
        {
            "api": {"concurrency": 2, "admission_ttl": "0.3s", "lease_timeout": "10s"},
            "mail": {"lease_timeout": "10s"},
        },
    )
    log = RecordLog()

    async def slow(job: ReadyJob) -> None:
        await asyncio.sleep(
            0.5
        )  # one at a time, longer than the TTL: the other admission expires, comes back

    async with running_janus(config) as service:
        # A worker of each dependency, each under its dependency's user.
        worker = Worker(
            locked.url(worker_role("api")), {"api": slow}, on_record=log.append, prefetch=10, max_in_flight=1
        )
        await worker.start()
        mailer = Worker(locked.url(worker_role("mail")), {"mail": succeed}, on_record=log.append)
        await mailer.start()
        async with await Producer.connect(locked.url("producer")) as producer:
            await producer.submit_many([(f"job-{i}", "api", None, "default") for i in range(6)])
            await producer.submit("letter", "mail")
            channel = await producer._connection.channel(publisher_confirms=True)
            intake = await channel.get_exchange(topology.INTAKE_EXCHANGE, ensure=True)
            await intake.publish(
                aio_pika.Message(b"not json", content_type="application/json"), routing_key="api"
            )
        # The worker may publish a result, even a forged one; Janus sets it aside.
        reporter = await aio_pika.connect(locked.url(worker_role("api")))
        async with reporter:
            reporting = await reporter.channel(publisher_confirms=True)
            results = await reporting.get_exchange(topology.RESULTS_EXCHANGE, ensure=True)
            forged = encode_result(job_id="ghost", attempt=1, outcome="success")
            await results.publish(
                aio_pika.Message(forged, content_type="application/json"), routing_key="api"
            )
        await log.wait_for(lambda _: len(log.succeeded()) == 7, timeout=40)
        await worker.stop()
        await mailer.stop()
        metrics = service.metrics.registry
        returned = metrics.get_sample_value(
            "janus_job_events_total", {"source": "returned", "verdict": "released"}
        )
        assert returned is not None
        assert returned > 0, "expired admissions dead-lettered back to Janus"
    rows = await job_rows(database)
    assert {row["state"] for row in rows.values()} == {"succeeded"}
    assert len(rows) == 7
    monitoring = await aio_pika.connect(locked.url("monitoring"))
    async with monitoring:
        channel = await monitoring.channel()
        rejected = await channel.declare_queue(topology.REJECTED_QUEUE, passive=True)
        assert rejected.declaration_result.message_count == 2  # the garbage and the forgery


async def test_a_dependencys_worker_cannot_report_for_another_with_cc_or_bcc(
    database: str, locked: LockedVhost, services: Services
) -> None:
    """RabbitMQ before 4.0.3 checks a publish's routing key against the topic permissions but
    not its CC and BCC keys: worker-api's result routed "api" with `CC: ["mail"]` reaches mail's
    results queue too. Its delivery keeps the routing key it was published (and checked) with,
    so Janus sets aside every result whose key is not its queue's dependency."""
    config = make_config(
        database,
        locked.url("janus"),
        {"api": {"lease_timeout": "30s"}, "mail": {"lease_timeout": "30s"}},
    )
    log = RecordLog()
    release = asyncio.Event()
    taken: list[ReadyJob] = []
    both_taken = asyncio.Event()

    async def held(job: ReadyJob) -> None:
        taken.append(job)
        if len(taken) == 2:
            both_taken.set()
        await release.wait()

    async with running_janus(config):
        mailer = Worker(locked.url(worker_role("mail")), {"mail": held}, on_record=log.append)
        await mailer.start()
        async with await Producer.connect(locked.url("producer")) as producer:
            await producer.submit("letter-cc", "mail")
            await producer.submit("letter-bcc", "mail")
            # The intake is checked the same way: the key, not a CC, must name the dependency.
            channel = await producer._connection.channel(publisher_confirms=True)
            intake = await channel.get_exchange(topology.INTAKE_EXCHANGE, ensure=True)
            body = json.dumps({"job_id": "intake-cc", "dependency": "mail"}).encode()
            await intake.publish(
                aio_pika.Message(body, content_type="application/json", headers={"CC": ["mail"]}),
                routing_key="api",
            )
        await asyncio.wait_for(both_taken.wait(), timeout=20)
        forger = await aio_pika.connect(locked.url(worker_role("api")))
        async with forger:
            channel = await forger.channel(publisher_confirms=True)
            results = await channel.get_exchange(topology.RESULTS_EXCHANGE, ensure=True)
            for job in taken:
                header = "CC" if job.job_id == "letter-cc" else "BCC"
                forged = encode_result(job_id=job.job_id, attempt=job.attempt, outcome="success")
                # Confirmed: the broker (3.10) let it through; it reached mail's queue and api's.
                await results.publish(
                    aio_pika.Message(forged, content_type="application/json", headers={header: ["mail"]}),
                    routing_key="api",
                )
        found = await rejected_messages(services.amqp_url(locked.vhost), 5)
        reasons = Counter(
            (headers[topology.SOURCE_HEADER], headers[topology.REASON_HEADER]) for _, headers in found
        )
        assert reasons == {
            ("results", "wrong_routing_key"): 2,  # the copies in mail's results queue
            ("results", "wrong_dependency"): 2,  # the copies in api's: jobs of mail
            ("intake", "routing_mismatch"): 1,
        }
        rows = await job_rows(database)
        assert {job_id: row["state"] for job_id, row in rows.items()} == {
            "letter-cc": "admitted",
            "letter-bcc": "admitted",
        }
        release.set()
        await log.wait_for(lambda _: log.succeeded() == {"letter-cc", "letter-bcc"}, timeout=20)
        await mailer.stop()


async def test_janus_warns_once_of_a_broker_that_does_not_check_cc(
    database: str, vhost: str, caplog: pytest.LogCaptureFixture
) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        version = broker_version(connection)
    assert version is not None, "RabbitMQ announces its version at the handshake"
    risk = unchecked_cc_risk(version)  # the tests' local 3.10.8: a risk
    with caplog.at_level(logging.WARNING, logger="janus.service"):
        async with running_janus(make_config(database, vhost, {"api": {}})):
            pass
    told = [record.getMessage() for record in caplog.records if "CC and BCC" in record.getMessage()]
    expected = [] if risk is None else [f"{risk}; upgrade where workers' teams do not trust each other"]
    assert told == expected
