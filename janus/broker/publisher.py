"""Confirmed, pipelined publishing of admissions (and of input set aside)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq import spec
from aiormq.abc import AbstractChannel as RawChannel
from pamqp.common import FieldTable

from janus.broker import broker_errors, topology
from janus.core.jobs import Admission
from janus.core.outbox import OutboxMessage
from janus.errors import BrokerError
from janus.protocol import CONTENT_TYPE, encode_ready

PERSISTENT = 2
T = TypeVar("T")


class Publisher:
    def __init__(self, channel: AbstractChannel, raw: RawChannel) -> None:
        self._channel = channel
        self._raw = raw

    @classmethod
    async def open(cls, connection: AbstractConnection) -> Publisher:
        with broker_errors("opening the publishing channel failed"):
            # on_return_raises: `mandatory` publishes that no queue takes fail loudly.
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.get_exchange(topology.READY_EXCHANGE, ensure=True)
            # Admissions go out through the underlying aiormq channel: an aio_pika.Message per
            # admission costs more CPU than the rest of the publish (see benchmarks/).
            return cls(channel, await channel.get_underlay_channel())

    @property
    def channel(self) -> AbstractChannel:
        return self._channel

    async def publish_admissions(self, admissions: Sequence[Admission]) -> list[Admission]:
        """Publish all at once, wait for every confirm; returns the admissions the broker refused."""
        return await self._publish_all(admissions, self._publish_one)

    async def _publish_all(self, items: Sequence[T], publish_one: Callable[[T], Awaitable[None]]) -> list[T]:
        """Each item published at once (pipelined), every confirm awaited; the items the broker
        refused. A closed channel is raised, not returned: nothing more can be published on it."""
        if not items:
            return []
        outcomes = await asyncio.gather(*(publish_one(item) for item in items), return_exceptions=True)
        failed = [item for item, outcome in zip(items, outcomes, strict=True) if outcome is not None]
        if failed and self._channel.is_closed:
            raise BrokerError("the publishing channel closed") from next(
                o for o in outcomes if isinstance(o, BaseException)
            )
        return failed

    async def _publish_one(self, admission: Admission) -> None:
        ttl_ms = max(round((admission.expires_at - admission.admitted_at) * 1000), 1)
        properties = spec.Basic.Properties(
            content_type=CONTENT_TYPE,
            delivery_mode=PERSISTENT,
            message_id=admission.job_id,  # also how a returned (unroutable) publish is matched
            expiration=str(ttl_ms),
        )
        confirmation = await self._raw.basic_publish(
            encode_ready(admission),
            exchange=topology.READY_EXCHANGE,
            routing_key=admission.dependency,
            properties=properties,
            mandatory=True,
        )
        if not isinstance(confirmation, spec.Basic.Ack):
            raise BrokerError(f"the broker refused admission {admission.job_id!r}: {confirmation!r}")

    async def publish_outcomes(self, messages: Sequence[OutboxMessage]) -> list[OutboxMessage]:
        """Publish outcome messages from the outbox (not mandatory: nobody need listen); the ones
        the broker refused. Every other one is confirmed: the outbox may forget it."""
        return await self._publish_all(messages, self._publish_outcome)

    async def _publish_outcome(self, message: OutboxMessage) -> None:
        properties = spec.Basic.Properties(
            content_type=CONTENT_TYPE, delivery_mode=PERSISTENT, message_id=message.job_id
        )
        confirmation = await self._raw.basic_publish(
            message.body,
            exchange=topology.OUTCOMES_EXCHANGE,
            routing_key=message.routing_key,
            properties=properties,
        )
        if not isinstance(confirmation, spec.Basic.Ack):
            raise BrokerError(f"the broker refused the outcome of {message.job_id!r}: {confirmation!r}")

    async def set_aside(
        self, body: bytes, source: str, reason: str, detail: str, *, original_size: int | None = None
    ) -> None:
        """Move bad input to the rejected queue with its reason; confirmed before the caller acks it.
        `original_size`: `body` is the start of a message of that many bytes.

        Through the raw channel, like admissions: a worker flooding janus.results with garbage
        makes this a hot path (benchmarks/flood.py).
        """
        headers: FieldTable = {
            topology.SOURCE_HEADER: source,
            topology.REASON_HEADER: reason,
            topology.DETAIL_HEADER: detail[:1000],
        }
        if original_size is not None:
            headers[topology.ORIGINAL_SIZE_HEADER] = original_size
        properties = spec.Basic.Properties(delivery_mode=PERSISTENT, headers=headers)
        with broker_errors("could not set aside a rejected message"):
            confirmation = await self._raw.basic_publish(
                body, exchange="", routing_key=topology.REJECTED_QUEUE, properties=properties, mandatory=True
            )
        if not isinstance(confirmation, spec.Basic.Ack):
            raise BrokerError(f"the broker did not take a rejected message: {confirmation!r}")

    async def close(self) -> None:
        with broker_errors("closing the publishing channel failed"):
            await self._channel.close()
