"""Confirmed, pipelined publishing of admissions (and of input set aside)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from aio_pika.exceptions import AMQPError

from janus.broker import topology
from janus.core.jobs import Admission
from janus.errors import BrokerError
from janus.protocol import CONTENT_TYPE, encode_ready


class Publisher:
    def __init__(self, channel: AbstractChannel, ready: AbstractExchange) -> None:
        self._channel = channel
        self._ready = ready

    @classmethod
    async def open(cls, connection: aio_pika.abc.AbstractConnection) -> Publisher:
        # on_return_raises: `mandatory` publishes that no queue takes fail loudly.
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        ready = await channel.get_exchange(topology.READY_EXCHANGE, ensure=True)
        return cls(channel, ready)

    async def publish_admissions(self, admissions: Sequence[Admission]) -> list[Admission]:
        """Publish all at once, wait for every confirm; returns the admissions the broker refused."""
        if not admissions:
            return []
        outcomes = await asyncio.gather(
            *(self._publish_one(admission) for admission in admissions), return_exceptions=True
        )
        failed = [a for a, outcome in zip(admissions, outcomes, strict=True) if outcome is not None]
        if failed and self._channel.is_closed:
            raise BrokerError("the publishing channel closed") from next(
                o for o in outcomes if isinstance(o, BaseException)
            )
        return failed

    async def _publish_one(self, admission: Admission) -> None:
        ttl = max(admission.expires_at - admission.admitted_at, 0.001)
        message = aio_pika.Message(
            encode_ready(admission),
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=admission.job_id,
            expiration=ttl,
        )
        await self._ready.publish(message, routing_key=admission.dependency, mandatory=True)

    async def set_aside(self, body: bytes, headers: dict[str, str], reason: str, detail: str) -> None:
        """Move bad input to the rejected queue with its reason; confirmed before the caller acks it."""
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={**headers, topology.REASON_HEADER: reason, topology.DETAIL_HEADER: detail[:1000]},
        )
        try:
            await self._channel.default_exchange.publish(
                message, routing_key=topology.REJECTED_QUEUE, mandatory=True
            )
        except AMQPError as exc:
            raise BrokerError(f"could not set aside a rejected message: {exc}") from exc

    async def close(self) -> None:
        await self._channel.close()
