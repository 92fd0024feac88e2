"""Consuming Janus's own queues at the AMQP channel level.

aio-pika wraps every delivery in an IncomingMessage and a task of its own; on the
hot path Janus only appends deliveries to a list and later acks a whole batch
with one multiple-ack, so it uses aio-pika's underlying aiormq channel directly
(the benchmark in benchmarks/ measures the difference).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aio_pika.abc
from aiormq.abc import AbstractChannel, DeliveredMessage

from janus.broker import broker_errors

Delivery = DeliveredMessage
RawChannel = AbstractChannel  # the channel a delivery came on: its acks go there
OnDelivery = Callable[[Delivery], Coroutine[Any, Any, None]]


def content_type(delivery: Delivery) -> str | None:
    return delivery.header.properties.content_type


async def ack_up_to(delivery: Delivery) -> None:
    """Ack this delivery and every earlier one of its channel."""
    assert delivery.delivery_tag is not None
    with broker_errors("could not ack deliveries"):
        await delivery.channel.basic_ack(delivery.delivery_tag, multiple=True)


async def ack_one(delivery: Delivery) -> None:
    assert delivery.delivery_tag is not None
    with broker_errors("could not ack a delivery"):
        await delivery.channel.basic_ack(delivery.delivery_tag, multiple=False)


@dataclass(kw_only=True)
class Consuming:
    channel: aio_pika.abc.AbstractChannel
    raw: RawChannel
    consumer_tag: str

    async def cancel(self) -> None:
        """No more deliveries (those already in flight still arrive)."""
        with broker_errors("cancelling a consumer failed"):
            await self.raw.basic_cancel(self.consumer_tag)


async def consume(
    connection: aio_pika.abc.AbstractConnection, queue: str, prefetch: int, on_delivery: OnDelivery
) -> Consuming:
    with broker_errors(f"cannot consume {queue}"):
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        await channel.get_queue(queue, ensure=True)  # fails loudly if the topology is missing
        raw = await channel.get_underlay_channel()
        ok = await raw.basic_consume(queue, on_delivery, no_ack=False)
    assert ok.consumer_tag is not None
    return Consuming(channel=channel, raw=raw, consumer_tag=ok.consumer_tag)
