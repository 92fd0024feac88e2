"""What every term starts with (service/term_kit.py), against the real services: the core rebuilt
from a store holding jobs in each state; consumers that need their topology and end the term when
the broker closes their channel; connection failures that end in the family the
service recovers from, named by the cause the metrics and the logs give.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import aio_pika
import aiormq
import asyncpg
import pytest

from janus.broker import topology
from janus.broker.consumer import Delivery
from janus.broker.publisher import Publisher
from janus.config import JanusConfig
from janus.core.jobs import Admission, Job, JobState
from janus.core.scheduler import Scheduler
from janus.errors import BrokerError, ConnectionSettingsError, StoreError
from janus.service.app import Service
from janus.service.options import ServiceOptions
from janus.service.steer import Running
from janus.service.term_kit import RECOVERABLE, ConsumerSpec, TermKit, cause_of, leaves_of
from janus.service.tick import page_in
from janus.store.repository import Store
from tests.integration.harness import make_config
from tests.services import Services

pytestmark = pytest.mark.integration

# Two admissions a minute: one is already in the window when the term starts.
POLICY = {"api": {"rate_limits": ["2/1m"], "concurrency": 5, "lease_timeout": "60s"}, "other": {}}


def kit_for(config: JanusConfig) -> TermKit:
    service = Service(config, ServiceOptions(serve_metrics=False, db_timeout=2.0))
    service.running = Running(version=1, config=config, removed=(), file_differs=False)
    return service.kit


def job(job_id: str, dependency: str = "api", **state: object) -> Job:
    return Job(job_id=job_id, dependency=dependency, scope="s", payload=None, **state)  # type: ignore[arg-type]


@pytest.fixture
async def stored(database: str, services: Services) -> tuple[JanusConfig, float]:
    """A store as an earlier term left it: a job of each state, the held one's admission in the
    rate window. Returns the policy and the time the jobs were written at."""
    now = time.time()
    held = job("held", seq=1, state=JobState.ADMITTED, attempt=1, eligible_at=now - 5)._replace(
        admitted_at=now - 1, expires_at=now + 30, lease_deadline=now + 60
    )
    jobs = [
        held,
        job("first", seq=2, eligible_at=now - 4),
        job("second", seq=3, eligible_at=now - 3),
        job("retrying", seq=4, eligible_at=now - 10),
        job("done", seq=5, state=JobState.SUCCEEDED, attempt=1, finished_at=now - 2),
        job(
            "gave-up", seq=6, state=JobState.DEAD, attempt=3, failures=3, finished_at=now - 2, last_error="x"
        ),
        job("elsewhere", dependency="other", seq=7, eligible_at=now - 4),
    ]
    store = await Store.connect(database)
    try:
        holder = uuid.uuid4()
        epoch = await store.try_acquire(holder, 30.0)
        assert epoch is not None
        async with store.leader_session(holder, epoch) as session:
            await session.write_tick(now - 1, [(j, None) for j in jobs], [], [Admission.of(held)])
            # Its first attempt failed: backing off for another 30 s.
            failed = jobs[3]._replace(attempt=1, failures=1, eligible_at=now + 30, last_error="boom")
            await session.write_tick(now - 1, [], [failed], [])
        await store.release(holder, epoch)
    finally:
        await store.close()
    # The broker plays no part in a rebuild.
    return make_config(database, services.amqp_url("/"), POLICY), now


async def rebuilt(kit: TermKit, only: set[str] | None = None) -> tuple[Store, Scheduler]:
    store = await kit.connect_store()
    return store, await kit.rebuild(store, only)


async def test_a_rebuild_restores_each_state_and_the_rate_window(stored: tuple[JanusConfig, float]) -> None:
    config, now = stored
    kit = kit_for(config)
    kit.worker_counts = {"api": 1, "other": 1}  # as the last term counted them: told to the new core
    store, scheduler = await rebuilt(kit)
    try:
        held, retrying = scheduler.job("held"), scheduler.job("retrying")
        assert held is not None
        assert (held.state, held.attempt) == (JobState.ADMITTED, 1)
        assert retrying is not None
        assert (retrying.state, retrying.failures, retrying.eligible_at) == (JobState.WAITING, 1, now + 30)
        assert (scheduler.job("done"), scheduler.job("gave-up")) == (None, None), "finished: not in memory"
        stats = {lane.dependency: lane for lane in scheduler.stats()}
        api = stats["api"]
        assert (api.held, api.stored, api.delayed) == (1, 2, 1), "first attempts stay in the store"
        assert (
            kit.service.metrics.registry.get_sample_value("janus_ready_consumers", {"dependency": "api"}) == 1
        )

        async with store.leader_session(uuid.uuid4(), 0) as session:  # reads only: no lease needed
            await page_in(scheduler, session)
        decision = scheduler.admit(time.time())
        admitted = sorted(a.job_id for a in decision.admissions)
        # "2/1m" with the held job's admission still in its window: one more, in seq order.
        assert admitted == ["elsewhere", "first"]
    finally:
        await store.close()


async def test_a_members_rebuild_holds_only_its_dependencies(stored: tuple[JanusConfig, float]) -> None:
    config, _ = stored
    store, scheduler = await rebuilt(kit_for(config), only={"other"})
    try:
        assert (scheduler.knows("api"), scheduler.knows("other")) == (False, True)
        assert scheduler.job("held") is None, "another member's held job"
        assert [lane.dependency for lane in scheduler.stats()] == ["other"]
    finally:
        await store.close()


async def database_gone(database_url: str, application_name: str) -> int:
    """PostgreSQL restarting or failing over: this process's connections end, and the database
    takes no new ones until `allow_connections` (with them allowed, whether the pool's first
    statement fails on the dead connection or reconnects would be a race). Returns how many ended."""
    admin = await asyncpg.connect(database_url.rsplit("/", 1)[0] + "/postgres")
    name = database_url.rsplit("/", 1)[1]
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        ended: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            application_name,
        )
    finally:
        await admin.close()
    return ended


async def allow_connections(database_url: str) -> None:
    admin = await asyncpg.connect(database_url.rsplit("/", 1)[0] + "/postgres")
    try:
        await admin.execute(f'ALTER DATABASE "{database_url.rsplit("/", 1)[1]}" ALLOW_CONNECTIONS true')
    finally:
        await admin.close()


async def test_a_database_gone_at_the_rebuild_is_a_recoverable_store_error(
    stored: tuple[JanusConfig, float],
) -> None:
    config, _ = stored
    kit = kit_for(config)
    store = await kit.connect_store()
    try:
        assert await database_gone(config.database_url, f"janus-{kit.service.identity}")
        with pytest.raises(RECOVERABLE) as raised:
            await kit.rebuild(store)
    finally:
        store.terminate()
        await allow_connections(config.database_url)
    assert isinstance(raised.value, StoreError), "no driver error leaks out of the store"
    assert cause_of(raised.value) == "database"


async def test_services_that_do_not_answer_are_outages_the_service_recovers_from() -> None:
    # Nothing listens on port 1 of this host: refused at once.
    config = make_config("postgresql://postgres@127.0.0.1:1/janus", "amqp://guest:guest@127.0.0.1:1/", POLICY)
    kit = kit_for(config)
    with pytest.raises(StoreError) as database_down:
        await kit.connect_store()
    with pytest.raises(BrokerError) as broker_down:
        await kit.connect_broker()
    assert kit.store is None, "no store to ask who leads"
    assert (cause_of(database_down.value), cause_of(broker_down.value)) == ("database", "broker")


async def test_a_vhost_the_broker_refuses_stops_the_process_rather_than_retrying(database: str) -> None:
    config = make_config(
        database, f"amqp://guest:guest@127.0.0.1:5672/janus-missing-{uuid.uuid4().hex}", POLICY
    )
    with pytest.raises(ConnectionSettingsError) as refused:
        await kit_for(config).connect_broker()
    assert not isinstance(refused.value, RECOVERABLE), "trying again cannot mend a refused vhost"


async def test_a_consumer_of_a_queue_the_topology_lacks_fails_loudly(database: str, vhost: str) -> None:
    kit = kit_for(make_config(database, vhost, POLICY))
    connection = await kit.connect_broker()
    try:
        await kit.declare(connection, ["api"])
        publisher = await Publisher.open(connection)
        missing = topology.ready_queue("undeclared")
        received: asyncio.Queue[Delivery] = asyncio.Queue()
        async with asyncio.TaskGroup() as group:
            with pytest.raises(BrokerError, match=missing):
                await kit.consume_all(connection, [(missing, 10, received.put)], publisher, group)
    finally:
        await connection.close()


async def test_a_consuming_channel_the_broker_closes_ends_the_term(database: str, vhost: str) -> None:
    kit = kit_for(make_config(database, vhost, POLICY))
    connection = await kit.connect_broker()
    received: asyncio.Queue[Delivery] = asyncio.Queue()
    consumer: ConsumerSpec = (topology.INTAKE_QUEUE, 10, received.put)

    async def term(publisher: Publisher) -> None:
        async with asyncio.TaskGroup() as group:
            (consuming,), _ = await kit.consume_all(connection, [consumer], publisher, group)
            await publisher.channel.default_exchange.publish(
                aio_pika.Message(b"{}"), routing_key=topology.INTAKE_QUEUE
            )
            delivery = await asyncio.wait_for(received.get(), timeout=10)
            assert delivery.body == b"{}", "deliveries reach the term's callback"
            # The broker closes the consuming channel (here: for a passive declare of no queue);
            # the watch task then fails, and the task group -- the term -- with it.
            with contextlib.suppress(aiormq.exceptions.ChannelNotFoundEntity):
                await consuming.raw.queue_declare("janus.no-such-queue", passive=True)
            await asyncio.Event().wait()  # until the watch's failure cancels the group

    try:
        await kit.declare(connection, ["api"])
        publisher = await Publisher.open(connection)
        with pytest.raises(ExceptionGroup) as ended:
            await asyncio.wait_for(term(publisher), timeout=10)
    finally:
        await connection.close()
    (error,) = leaves_of(ended.value)
    assert isinstance(error, BrokerError)
    assert str(error) == "a consuming channel closed"
    assert cause_of(ended.value) == "broker"
