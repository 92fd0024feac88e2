"""janus.broker.consumer runs consumer callbacks in the channel's reader (no task per delivery):
every delivery reaches the callback in order, and a callback that awaits closes the channel."""

from __future__ import annotations

import asyncio

import aio_pika

from janus.broker.consumer import Delivery, consume


async def _publish(connection: aio_pika.abc.AbstractConnection, queue: str, count: int) -> None:
    channel = await connection.channel()
    await channel.declare_queue(queue)
    for index in range(count):
        await channel.default_exchange.publish(aio_pika.Message(str(index).encode()), routing_key=queue)
    await channel.close()


async def test_every_delivery_reaches_the_callback_in_order(vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await _publish(connection, "inline", 300)
        got: list[Delivery] = []
        all_in = asyncio.Event()

        async def record(delivery: Delivery) -> None:
            got.append(delivery)
            if len(got) == 300:
                all_in.set()

        consuming = await consume(connection, "inline", 1000, record)
        await asyncio.wait_for(all_in.wait(), 20)
        assert [d.body for d in got] == [str(i).encode() for i in range(300)]
        assert [d.delivery_tag for d in got] == list(range(1, 301))
        await got[-1].channel.basic_ack(300, multiple=True)
        await consuming.cancel()


async def test_a_callback_that_awaits_is_carried_on(vhost: str) -> None:
    """Not what Janus's callbacks do, but it must not lose a delivery: the rest runs in a task."""
    connection = await aio_pika.connect(vhost)
    async with connection:
        await _publish(connection, "waits", 20)
        got: list[bytes] = []
        cancelled = asyncio.Event()

        async def waits(delivery: Delivery) -> None:
            await asyncio.sleep(0)
            await asyncio.sleep(0.01)
            got.append(delivery.body)
            try:
                if delivery.body == b"19":
                    await asyncio.Future()  # waits until the channel closes
            except asyncio.CancelledError:
                cancelled.set()
                raise

        consuming = await consume(connection, "waits", 100, waits)
        for _ in range(500):
            if len(got) == 20:
                break
            await asyncio.sleep(0.01)
        assert sorted(got, key=int) == [str(i).encode() for i in range(20)]
        await consuming.channel.close()  # cancels the channel's tasks: the rest of the last callback
        await asyncio.wait_for(cancelled.wait(), 5)
