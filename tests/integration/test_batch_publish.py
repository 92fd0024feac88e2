"""Admissions and outcomes published as one batch (janus/broker/batch.py), on a real broker:
every message arrives whole and in order, each is confirmed or refused on its own, and the
channel's confirms stay matched to later publishes after a refusal. A publish begun and then
dropped unawaited, as when a term ends before the task that awaits its confirms ever runs:
nothing warns, and the channel stays in step with the broker."""

from __future__ import annotations

import asyncio
import gc
import json
import warnings
from collections.abc import AsyncIterator, Awaitable

import aio_pika
import pytest
from aiormq import spec
from aiormq.channel import Channel

from janus.broker import topology
from janus.broker.batch import LOCK
from janus.broker.publisher import Publisher
from janus.core.jobs import Admission
from janus.core.outbox import OutboxMessage
from janus.errors import BrokerError


def _admission(job_id: str, dependency: str, payload: object = None) -> Admission:
    return Admission(
        job_id=job_id,
        dependency=dependency,
        scope="default",
        payload=payload,
        attempt=1,
        admitted_at=1000.0,
        expires_at=1030.0,
        lease_deadline=1060.0,
    )


@pytest.fixture
async def connection(vhost: str) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    """A connection to the test's vhost, with the dependency "api"'s topology declared."""
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, ["api"])
        yield connection


@pytest.fixture
async def publisher(connection: aio_pika.abc.AbstractConnection) -> Publisher:
    return await Publisher.open(connection)


async def _raw(publisher: Publisher) -> Channel:
    """The aiormq channel under the publisher's (its delivery tags, its lock)."""
    raw = await publisher.channel.get_underlay_channel()
    assert isinstance(raw, Channel)
    return raw


async def _drain(queue: aio_pika.abc.AbstractQueue, count: int) -> list[aio_pika.abc.AbstractIncomingMessage]:
    got = []
    async with queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            got.append(message)
            if len(got) == count:
                break
    return got


async def test_a_batch_arrives_whole_and_in_order(
    connection: aio_pika.abc.AbstractConnection, publisher: Publisher
) -> None:
    big = "x" * 300_000  # several body frames, and more than one write of the batch
    admissions = [_admission(f"job-{i}", "api", big if i in (3, 700) else {"i": i}) for i in range(900)]
    assert await publisher.publish_admissions(admissions) == []
    channel = await connection.channel()
    ready = await channel.get_queue(topology.ready_queue("api"), ensure=True)
    got = await _drain(ready, len(admissions))
    assert [m.message_id for m in got] == [a.job_id for a in admissions]
    assert [json.loads(m.body)["payload"] for m in got] == [a.payload for a in admissions]
    assert {m.expiration for m in got} == {30.0}
    assert {m.delivery_mode for m in got} == {aio_pika.DeliveryMode.PERSISTENT}


async def test_refused_ones_come_back_and_later_confirms_still_match(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    channel = await connection.channel()
    # A ready queue that refuses beyond 5 messages (a nack), and a dependency no queue is
    # bound for (returned unroutable): both in one batch with admissions that go through.
    full = await channel.declare_queue("full", arguments={"x-max-length": 5, "x-overflow": "reject-publish"})
    await full.bind(topology.READY_EXCHANGE, routing_key="full")
    publisher = await Publisher.open(connection)
    batch = [_admission(f"ok-{i}", "api") for i in range(20)]
    batch += [_admission(f"full-{i}", "full") for i in range(8)]
    batch += [_admission(f"lost-{i}", "nowhere") for i in range(3)]
    batch += [_admission(f"ok-late-{i}", "api") for i in range(10)]
    refused = await publisher.publish_admissions(batch)
    assert sorted(a.job_id for a in refused) == sorted(
        [f"full-{i}" for i in range(5, 8)] + [f"lost-{i}" for i in range(3)]
    )
    # The channel's delivery tags still match the broker's: a later batch is confirmed whole.
    outcomes = [
        OutboxMessage(id=f"o-{i}", job_id=f"ok-{i}", routing_key="api.succeeded", body=b"{}")
        for i in range(50)
    ]
    assert await publisher.publish_outcomes(outcomes) == []
    assert await publisher.publish_admissions([_admission("after", "api")]) == []
    ready = await channel.get_queue(topology.ready_queue("api"), ensure=True)
    got = await _drain(ready, 31)
    assert [m.message_id for m in got][-1] == "after"


async def test_a_closed_channel_raises(publisher: Publisher) -> None:
    await publisher.channel.close()
    with pytest.raises(BrokerError):
        await publisher.publish_admissions([_admission("job-1", "api")])


async def test_a_free_channel_has_the_batch_queued_before_start_returns(publisher: Publisher) -> None:
    raw = await _raw(publisher)
    before = raw.write_queue.qsize()
    confirming = publisher.start_admissions([_admission(f"job-{i}", "api") for i in range(10)])
    # Nothing awaited yet: the frames are already in the connection's write queue.
    assert raw.write_queue.qsize() > before
    assert raw.delivery_tag == 10
    assert await confirming == []


async def test_batches_interleaved_with_single_publishes_match_their_confirms(publisher: Publisher) -> None:
    raw = await _raw(publisher)
    pending: list[Awaitable[list[Admission]]] = []
    singles: list[Awaitable[object]] = []
    expected_refused: list[str] = []
    for round_ in range(30):
        # Each batch has a refused (unroutable) message at a place of its own.
        batch = [_admission(f"b{round_}-{i}", "api") for i in range(round_ % 7 + 1)]
        batch.insert(round_ % len(batch), _admission(f"lost-{round_}", "nowhere"))
        expected_refused.append(f"lost-{round_}")
        pending.append(publisher.start_admissions(batch))
        # A single publish under the channel's lock in between, some of them returned too.
        single = raw.basic_publish(
            b"{}",
            exchange=topology.READY_EXCHANGE,
            routing_key="api" if round_ % 3 else "nowhere",
            mandatory=True,
            properties=spec.Basic.Properties(message_id=f"single-{round_}"),
        )
        singles.append(asyncio.ensure_future(single))
        if round_ % 4 == 0:
            await asyncio.sleep(0)
    refused = await asyncio.gather(*pending)
    assert [[a.job_id for a in r] for r in refused] == [[name] for name in expected_refused]
    outcomes = await asyncio.gather(*singles, return_exceptions=True)
    for round_, outcome in enumerate(outcomes):
        if round_ % 3:
            assert isinstance(outcome, spec.Basic.Ack), (round_, outcome)
        else:
            assert isinstance(outcome, BaseException), (round_, outcome)
    # Still in step with the broker afterwards.
    assert await publisher.publish_admissions([_admission("after", "api")]) == []


def _runtime_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


async def test_a_publish_dropped_unawaited_warns_nothing(publisher: Publisher) -> None:
    raw = await _raw(publisher)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # On a free channel: written at once, its confirms never awaited.
        publisher.start_admissions([_admission("free-1", "api"), _admission("free-2", "api")])
        publisher.start_outcomes(
            [OutboxMessage(id="o-1", job_id="free-1", routing_key="api.succeeded", body=b"{}")]
        )
        # On a busy channel (its lock held): the batch would wait for the lock, and is dropped.
        lock: asyncio.Lock = getattr(raw, LOCK)
        async with lock:
            publisher.start_admissions([_admission("busy-1", "api")])
        gc.collect()
    assert _runtime_warnings(caught) == []
    # The dropped batches took no delivery tag that the broker will not confirm: a later
    # publish is still matched to its own confirm.
    assert raw.delivery_tag == 3
    assert await publisher.publish_admissions([_admission("after", "api")]) == []


async def test_a_term_ending_before_its_confirms_are_awaited_warns_nothing(publisher: Publisher) -> None:
    """The admission loop's shape: the batch started at once, its confirms awaited by a task of
    the term's group, which the term's end cancels before that task ever runs."""

    confirming: list[asyncio.Task[None]] = []

    async def confirmed(admitting: Awaitable[list[Admission]]) -> None:
        await admitting

    async def a_term_that_ends_at_once() -> None:
        async with asyncio.TaskGroup() as term:
            # Nothing else holds what start_admissions returns, as in the admission loop.
            confirming.append(
                term.create_task(confirmed(publisher.start_admissions([_admission("ended", "api")])))
            )
            raise RuntimeError("the term ends")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ExceptionGroup) as ended:
            await a_term_that_ends_at_once()
        assert [str(e) for e in ended.value.exceptions] == ["the term ends"]
        assert confirming[0].cancelled(), "the task awaiting the confirms never ran"
        # Let go of the task and the traceback, which may hold its coroutine's frame.
        confirming.clear()
        del ended
        gc.collect()
    assert _runtime_warnings(caught) == []


async def test_a_publish_is_awaited_once(publisher: Publisher) -> None:
    confirming = publisher.start_admissions([_admission("once", "api")])
    assert await confirming == []
    # Like a coroutine: a second await would wait on nothing new (or, busy, publish again).
    with pytest.raises(RuntimeError, match="awaited"):
        await confirming
