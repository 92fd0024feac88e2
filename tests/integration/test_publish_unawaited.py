"""A publish begun and then dropped unawaited, as when a term ends before the task that awaits
its confirms ever runs: nothing warns, and the channel stays in step with the broker. On a real
broker (janus/broker/publisher.py, janus/broker/batch.py)."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Awaitable

import aio_pika
import pytest
from aiormq.channel import Channel

from janus.broker import topology
from janus.broker.batch import LOCK
from janus.broker.publisher import Publisher
from janus.core.jobs import Admission
from janus.core.outbox import OutboxMessage


def _admission(job_id: str) -> Admission:
    return Admission(
        job_id=job_id,
        dependency="api",
        scope="default",
        payload=None,
        attempt=1,
        admitted_at=1000.0,
        expires_at=1030.0,
        lease_deadline=1060.0,
    )


def _runtime_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


async def test_a_publish_dropped_unawaited_warns_nothing(vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, ["api"])
        publisher = await Publisher.open(connection)
        raw = await publisher.channel.get_underlay_channel()
        assert isinstance(raw, Channel)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # On a free channel: written at once, its confirms never awaited.
            publisher.start_admissions([_admission("free-1"), _admission("free-2")])
            publisher.start_outcomes(
                [OutboxMessage(id="o-1", job_id="free-1", routing_key="api.succeeded", body=b"{}")]
            )
            # On a busy channel (its lock held): the batch would wait for the lock, and is dropped.
            lock: asyncio.Lock = getattr(raw, LOCK)
            async with lock:
                publisher.start_admissions([_admission("busy-1")])
            gc.collect()
        assert _runtime_warnings(caught) == []
        # The dropped batches took no delivery tag that the broker will not confirm: a later
        # publish is still matched to its own confirm.
        assert raw.delivery_tag == 3
        assert await publisher.publish_admissions([_admission("after")]) == []


async def test_a_term_ending_before_its_confirms_are_awaited_warns_nothing(vhost: str) -> None:
    """The admission loop's shape: the batch started at once, its confirms awaited by a task of
    the term's group, which the term's end cancels before that task ever runs."""
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, ["api"])
        publisher = await Publisher.open(connection)

        confirming: list[asyncio.Task[None]] = []

        async def confirmed(admitting: Awaitable[list[Admission]]) -> None:
            await admitting

        async def a_term_that_ends_at_once() -> None:
            async with asyncio.TaskGroup() as term:
                # Nothing else holds what start_admissions returns, as in the admission loop.
                confirming.append(
                    term.create_task(confirmed(publisher.start_admissions([_admission("ended")])))
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


async def test_a_publish_is_awaited_once(vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, ["api"])
        publisher = await Publisher.open(connection)
        confirming = publisher.start_admissions([_admission("once")])
        assert await confirming == []
        # Like a coroutine: a second await would wait on nothing new (or, busy, publish again).
        with pytest.raises(RuntimeError, match="awaited"):
            await confirming
