"""The protocol's corners, as a worker or a producer written from docs/protocol.md meets them.

Each test is one rule of the document: what Janus does with a publish no queue takes, with a
result published twice or after its lease, with intake routed under another key, with a ready
message a worker cannot read; and that the SDK worker publishes every result, even across a
lost connection.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from janus.audit import audit
from janus.broker import topology
from janus.client import Producer, ReadyJob, Worker
from janus.client.worker import ReadyMessage
from janus.errors import NotRouted
from janus.protocol import CONTENT_TYPE, decode_ready, encode_intake, encode_result
from tests.integration.harness import (
    RecordLog,
    close_connections_named,
    job_rows,
    make_config,
    policies,
    running_janus,
    wait_for_states,
)

pytestmark = pytest.mark.integration

API = {"lease_timeout": "30s", "admission_ttl": "2s", "retry": {"base_delay": "0.2s", "max_delay": "0.5s"}}


@dataclass
class Broker:
    """A plain client of Janus's vhost: publishes like a producer or a worker, reads janus.rejected."""

    channel: AbstractChannel
    rejected: list[tuple[str, str, bytes]] = field(default_factory=list)  # (source, reason, body)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ready: dict[str, asyncio.Queue[AbstractIncomingMessage]] = field(default_factory=dict)  # taken

    async def on_rejected(self, message: AbstractIncomingMessage) -> None:
        source, reason = message.headers[topology.SOURCE_HEADER], message.headers[topology.REASON_HEADER]
        assert isinstance(source, str)
        assert isinstance(reason, str)
        self.rejected.append((source, reason, message.body))
        self.changed.set()
        await message.ack()

    async def wait_rejected(self, count: int, timeout: float = 20) -> list[tuple[str, str, bytes]]:
        async with asyncio.timeout(timeout):
            while len(self.rejected) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.rejected

    async def publish_intake(
        self, body: bytes, routing_key: str, content_type: str | None = CONTENT_TYPE
    ) -> None:
        exchange = await self.channel.get_exchange(topology.INTAKE_EXCHANGE, ensure=True)
        await exchange.publish(aio_pika.Message(body, content_type=content_type), routing_key=routing_key)

    async def publish_result(self, dependency: str, **fields: Any) -> None:
        exchange = await self.channel.get_exchange(topology.RESULTS_EXCHANGE, ensure=True)
        message = aio_pika.Message(encode_result(**fields), content_type=CONTENT_TYPE)
        await exchange.publish(message, routing_key=dependency)

    async def take_ready(
        self, dependency: str, timeout: float = 20
    ) -> tuple[AbstractIncomingMessage, ReadyMessage]:
        """The next admission of `dependency`, unacked (the caller settles it). Delivered to a
        consumer, from the first call on, rather than fetched with basic.get: Janus admits nothing
        to a ready queue that nobody consumes (no_worker)."""
        taken = self.ready.get(dependency)
        if taken is None:
            taken = self.ready[dependency] = asyncio.Queue()
            queue = await self.channel.get_queue(topology.ready_queue(dependency), ensure=True)
            await queue.consume(taken.put)
        async with asyncio.timeout(timeout):
            message = await taken.get()
        return message, decode_ready(message.body)


@asynccontextmanager
async def broker(amqp_url: str) -> AsyncIterator[Broker]:
    connection = await aio_pika.connect(amqp_url, client_properties={"connection_name": "test-broker"})
    try:
        channel = await connection.channel(publisher_confirms=True)
        plain = Broker(channel=channel)
        consuming = await connection.channel()
        queue: AbstractQueue = await consuming.get_queue(topology.REJECTED_QUEUE, ensure=True)
        await queue.consume(plain.on_rejected)
        yield plain
    finally:
        await connection.close()


# -- producers ---------------------------------------------------------------------------


async def test_a_publish_no_queue_takes_fails_at_the_producer(vhost: str) -> None:
    """`mandatory`: the broker returns the message (basic.return) and then confirms it; the SDK
    producer raises for the return instead of reporting a success."""
    connection = await aio_pika.connect(vhost)
    async with connection:
        channel = await connection.channel()
        # janus.intake exists, but nothing is bound to it: as before Janus declared its queue.
        await channel.declare_exchange(topology.INTAKE_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        async with await Producer.connect(vhost) as producer:
            with pytest.raises(NotRouted, match="no queue took job 'lost-1'"):
                await producer.submit("lost-1", "api", {"n": 1})
            # A queue bound now takes the same publish: the error was the return, nothing else.
            queue = await channel.declare_queue("janus.test-intake", auto_delete=True)
            await queue.bind(topology.INTAKE_EXCHANGE, routing_key="#")
            await producer.submit("lost-1", "api", {"n": 1})
            assert (await queue.declare()).message_count == 1


async def test_intake_under_another_routing_key_is_set_aside(database: str, vhost: str) -> None:
    """Per-dependency producer permissions judge the routing key: a body naming another
    dependency is set aside (routing_mismatch), and a missing content_type is taken as JSON."""
    config = make_config(database, vhost, {"api": API, "mail": API})
    async with running_janus(config), broker(vhost) as plain:
        body = encode_intake(job_id="crossed", dependency="api", scope="t", payload=None)
        await plain.publish_intake(body, routing_key="mail")
        await plain.publish_intake(
            encode_intake(job_id="bare", dependency="api", scope="t", payload=None), "api", None
        )
        ((source, reason, kept),) = await plain.wait_rejected(1)
        message, ready = await plain.take_ready("api")
        await message.ack()
    assert (source, reason, kept) == ("intake", "routing_mismatch", body)
    assert ready.job_id == "bare"
    # An omitted payload reaches the worker as an explicit null.
    assert json.loads(message.body)["payload"] is None
    assert "crossed" not in await job_rows(database)


async def test_a_job_id_of_one_dependency_published_for_another_is_set_aside(
    database: str, vhost: str
) -> None:
    """Job ids are global: an id that is (or was) a job of api, published for mail, is set aside
    (duplicate_of_other_dependency) instead of silently dropped, whether Janus still holds the job
    or it finished long ago (only the store knows it then); the same id again for api stays a
    harmless duplicate, acked and dropped."""
    config = make_config(database, vhost, {"api": API, "mail": API})

    def intake(job_id: str, dependency: str) -> bytes:
        return encode_intake(job_id=job_id, dependency=dependency, scope="t", payload=None)

    async with running_janus(config), broker(vhost) as plain:
        await plain.publish_intake(intake("held", "api"), "api")
        await plain.publish_intake(intake("done", "api"), "api")
        message, ready = await plain.take_ready("api")
        done = message if ready.job_id == "done" else None
        if done is None:
            held, (done, _) = message, await plain.take_ready("api")
        else:
            held, _ = await plain.take_ready("api")
        await done.ack()
        await plain.publish_result("api", job_id="done", attempt=1, outcome="success")
        await wait_for_states(database, lambda rows: rows["done"]["state"] == "succeeded", timeout=20)
        # "held" is still admitted (in Janus's memory); "done" is finished (only in PostgreSQL).
        for job_id in ("held", "done"):
            await plain.publish_intake(intake(job_id, "api"), "api")  # a repeat: a duplicate
            await plain.publish_intake(intake(job_id, "mail"), "mail")
        found = await plain.wait_rejected(2)
        await held.ack()
        await plain.publish_result("api", job_id="held", attempt=1, outcome="success")
        rows = await wait_for_states(database, lambda rows: rows["held"]["state"] == "succeeded", timeout=20)
    assert sorted(found) == [
        ("intake", "duplicate_of_other_dependency", intake("done", "mail")),
        ("intake", "duplicate_of_other_dependency", intake("held", "mail")),
    ]
    assert {job_id: (row["dependency"], row["attempt"]) for job_id, row in rows.items()} == {
        "held": ("api", 1),
        "done": ("api", 1),
    }


# -- workers: results that change nothing --------------------------------------------------


async def test_a_result_published_again_is_a_duplicate_not_a_stale_attempt(database: str, vhost: str) -> None:
    config = make_config(database, vhost, {"api": API})
    async with running_janus(config), broker(vhost) as plain:
        async with await Producer.connect(vhost) as producer:
            await producer.submit("ok", "api")
            await producer.submit("flaky", "api")
        taken = [await plain.take_ready("api"), await plain.take_ready("api")]
        for message, _ in taken:
            await message.ack()
        ok, flaky = sorted((ready for _, ready in taken), key=lambda ready: ready.job_id != "ok")
        # Twice in a row: the second copy may share the first's tick, or come in the next.
        for _ in range(2):
            await plain.publish_result("api", job_id="ok", attempt=ok.attempt, outcome="success")
            await plain.publish_result(
                "api", job_id="flaky", attempt=flaky.attempt, outcome="failure", error="503"
            )
        rows = await wait_for_states(
            database, lambda r: r["ok"]["state"] == "succeeded" and r["flaky"]["failures"] == 1, timeout=20
        )
        # Later, once both are settled in the store: again the same results, and two that differ.
        await plain.publish_result("api", job_id="ok", attempt=ok.attempt, outcome="success")
        await plain.publish_result(
            "api", job_id="flaky", attempt=flaky.attempt, outcome="failure", error="503"
        )
        await plain.publish_result("api", job_id="flaky", attempt=flaky.attempt, outcome="success")
        await plain.publish_result("api", job_id="ok", attempt=ok.attempt + 1, outcome="success")
        rejected = await plain.wait_rejected(6)
    assert rows["ok"]["state"] == "succeeded"
    reasons = [
        (json.loads(body)["job_id"], json.loads(body)["outcome"], reason) for _, reason, body in rejected
    ]
    assert sorted(reasons) == sorted(
        [
            *[("ok", "success", "duplicate_result"), ("flaky", "failure", "duplicate_result")] * 2,
            ("flaky", "success", "stale_attempt"),  # not what attempt 1 reported: a misbehaving worker
            ("ok", "success", "unknown_job"),  # an attempt the finished job never had
        ]
    )
    assert {source for source, _, _ in rejected} == {"results"}


async def test_a_failure_after_the_lease_ran_out_is_set_aside_as_lease_expired(
    database: str, vhost: str
) -> None:
    """A handler cut off at the end of its lease reports a failure Janus may already have counted:
    it changes nothing, and is set aside as lease_expired (not as a misbehaving worker's stale attempt)."""
    short = {
        **API,
        "lease_timeout": "1s",
        "admission_ttl": "0.3s",
        "retry": {"base_delay": "10s", "max_delay": "10s"},
    }
    config = make_config(database, vhost, {"api": short})
    async with running_janus(config), broker(vhost) as plain:
        async with await Producer.connect(vhost) as producer:
            await producer.submit("slow", "api")
        message, ready = await plain.take_ready("api")
        await message.ack()
        rows = await wait_for_states(database, lambda r: r["slow"]["failures"] == 1, timeout=20)
        await plain.publish_result(
            "api", job_id="slow", attempt=ready.attempt, outcome="failure", error="cut off"
        )
        ((source, reason, _),) = await plain.wait_rejected(1)
        after = (await job_rows(database))["slow"]
    assert rows["slow"]["last_error"].startswith("lease timed out after")
    assert (source, reason) == ("results", "lease_expired")
    assert (after["state"], after["failures"], after["last_error"]) == (
        "waiting",
        1,
        rows["slow"]["last_error"],
    )


async def test_retry_after_with_a_success_pauses_the_dependency(database: str, vhost: str) -> None:
    config = make_config(database, vhost, {"api": API})
    async with running_janus(config), broker(vhost) as plain:
        async with await Producer.connect(vhost) as producer:
            await producer.submit("first", "api")
            message, first = await plain.take_ready("api")
            await message.ack()
            await plain.publish_result(
                "api", job_id="first", attempt=first.attempt, outcome="success", retry_after=1.5
            )
            await wait_for_states(database, lambda r: r["first"]["state"] == "succeeded", timeout=20)
            await producer.submit("second", "api")
        message, second = await plain.take_ready("api")
        await message.ack()
        assert not plain.rejected
    assert second.admitted_at >= first.admitted_at + 1.5  # the pause began after the success, later still


# -- workers: what the SDK does ------------------------------------------------------------


async def test_a_ready_message_a_worker_cannot_read_goes_back_to_janus(database: str, vhost: str) -> None:
    """The SDK worker rejects it unstarted (it cannot report without job_id and attempt): it is
    dead-lettered to Janus, which sets it aside as malformed_returned."""
    config = make_config(database, vhost, {"api": API})
    log = RecordLog()
    async with running_janus(config), broker(vhost) as plain:
        queue = await plain.channel.get_queue(topology.ready_queue("api"), ensure=True)
        await plain.channel.default_exchange.publish(
            aio_pika.Message(b"\x00 not an admission"), routing_key=queue.name
        )
        worker = Worker(vhost, {"api": lambda job: asyncio.sleep(0)}, on_record=log.append)
        await worker.start()
        try:
            ((source, reason, body),) = await plain.wait_rejected(1)
        finally:
            await worker.stop()
    assert (source, reason, body) == ("returned", "malformed_returned", b"\x00 not an admission")
    assert log.records == []


async def test_the_worker_publishes_a_result_again_after_losing_its_connection(
    database: str, vhost: str
) -> None:
    """Closed from the broker's side while a handler runs: the worker reconnects, the result is
    published (and confirmed) over the new connection, and every job finishes long before any lease."""
    config = make_config(database, vhost, {"api": {**API, "lease_timeout": "120s"}})
    log = RecordLog()
    running = asyncio.Event()
    release = asyncio.Event()

    async def handler(job: ReadyJob) -> None:
        if job.job_id == "held":
            running.set()
            await release.wait()

    name = f"test-worker-{time.monotonic_ns()}"
    jobs = [("held", "api", None, "t"), *((f"job-{i}", "api", None, "t") for i in range(20))]
    async with running_janus(config):
        worker = Worker(vhost, {"api": handler}, on_record=log.append, name=name)
        await worker.start()
        try:
            async with await Producer.connect(vhost) as producer:
                await producer.submit_many(jobs[:1])
                async with asyncio.timeout(20):
                    await running.wait()
                await close_connections_named(name)
                release.set()  # its result is published while the connection is gone or new
                await producer.submit_many(jobs[1:])  # taken over the new connection
            await wait_for_states(
                database,
                lambda rows: all(rows.get(j[0], {"state": ""})["state"] == "succeeded" for j in jobs),
                30,
            )
        finally:
            await worker.stop()
    report = audit(log.records, policies(config), expected_jobs=[j[0] for j in jobs])
    assert report.ok, report.summary()
    rows = await job_rows(database)
    assert rows["held"]["failures"] == 0, "its result arrived: the attempt did not run out its lease"


async def test_the_worker_never_starts_an_admission_that_expired_while_it_was_taken(
    database: str, vhost: str
) -> None:
    """Acked, an admission cannot be handed back: if the ack took the worker past expires_at (a
    stalled event loop, here a clock that jumps), it reports a failure and does not start it."""
    config = make_config(
        database, vhost, {"api": {**API, "retry": {"base_delay": "0.1s", "max_delay": "0.1s"}}}
    )
    log = RecordLog()
    ran: list[int] = []
    readings = iter([0.0, 0.0, 100.0])  # arrival, the check before the ack, the start after it

    def clock() -> float:
        return time.time() + next(readings, 0.0)

    async def handler(job: ReadyJob) -> None:
        ran.append(job.attempt)

    async with running_janus(config):
        worker = Worker(vhost, {"api": handler}, on_record=log.append, clock=clock)
        await worker.start()
        try:
            async with await Producer.connect(vhost) as producer:
                await producer.submit("late", "api")
            await log.wait_for(lambda records: any(r.outcome == "success" for r in records), timeout=20)
        finally:
            await worker.stop()
    first, *_, last = log.records
    assert (first.attempt, first.outcome, first.started_at) == (1, "failure", None)
    assert first.error == "not started: the admission expired while it was being taken"
    assert (last.attempt, last.outcome) == (2, "success")
    assert ran == [2]
    rows = await job_rows(database)
    assert (rows["late"]["state"], rows["late"]["failures"]) == ("succeeded", 1)


async def test_the_worker_reopens_a_results_channel_the_broker_closed(database: str, vhost: str) -> None:
    """A channel error (here a passive declare of a missing exchange on the worker's results
    channel) closes only that channel: the next result is published on a new one."""
    config = make_config(database, vhost, {"api": API})
    log = RecordLog()
    async with running_janus(config):
        worker = Worker(vhost, {"api": succeed_at_once}, on_record=log.append)
        await worker.start()
        try:
            channel = worker._results_channel  # the channel results go out on
            assert channel is not None
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await channel.declare_exchange("janus.test-missing", passive=True)
            async with await Producer.connect(vhost) as producer:
                await producer.submit("after", "api")
            rows = await wait_for_states(
                database, lambda r: r.get("after", {"state": ""})["state"] == "succeeded", 20
            )
        finally:
            await worker.stop()
    assert rows["after"]["failures"] == 0


async def succeed_at_once(job: ReadyJob) -> None:
    return None


async def test_the_worker_drops_a_redelivered_copy_of_an_admission_it_started(
    database: str, vhost: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An ack the broker never read (its connection closed first) brings the admission back,
    flagged redelivered, although the worker started it. Made here for real: the test holds
    Janus's delivery unacked, puts a copy in the ready queue for the worker to start, then
    closes its channel, so the broker redelivers the original. The worker must drop it:
    started again it would run the job twice, handed back it would free a held slot."""
    caplog.set_level("INFO", logger="janus.worker")
    config = make_config(database, vhost, {"api": API})
    started: list[int] = []
    running = asyncio.Event()
    release = asyncio.Event()

    async def handler(job: ReadyJob) -> None:
        started.append(job.attempt)
        running.set()
        await release.wait()

    async with running_janus(config), await aio_pika.connect(vhost) as connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.ready_queue("api"), ensure=True)
        taken: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        consumer = await queue.consume(taken.put)
        async with await Producer.connect(vhost) as producer:
            await producer.submit("once", "api")
        async with asyncio.timeout(20):
            original = await taken.get()
        assert not original.redelivered
        await queue.cancel(consumer)  # the original stays unacked on this channel
        ready_exchange = await channel.get_exchange(topology.READY_EXCHANGE, ensure=True)
        await ready_exchange.publish(
            aio_pika.Message(original.body, content_type=CONTENT_TYPE), routing_key="api"
        )
        worker = Worker(vhost, {"api": handler})
        await worker.start()
        try:
            async with asyncio.timeout(20):
                await running.wait()
            await channel.close()  # the unacked original goes back, flagged redelivered
            async with asyncio.timeout(20):
                while True:  # the worker's log is the one sign of a copy it dropped
                    if any(
                        "delivered again after its ack was lost" in r.getMessage() for r in caplog.records
                    ):
                        break
                    await asyncio.sleep(0.05)
            release.set()
            await wait_for_states(
                database, lambda rows: rows.get("once", {"state": ""})["state"] == "succeeded", 20
            )
        finally:
            await worker.stop()
    assert started == [1], "the redelivered copy was started again"
    rows = await job_rows(database)
    assert (rows["once"]["state"], rows["once"]["failures"]) == ("succeeded", 0)
