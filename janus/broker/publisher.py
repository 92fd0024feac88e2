"""Confirmed, pipelined publishing of admissions (and of input set aside)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from functools import partial
from typing import TypeVar

from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq import spec
from aiormq.abc import AbstractChannel as RawChannel
from aiormq.channel import Channel
from pamqp.common import FieldTable

from janus.broker import BROKER_ERRORS, broker_errors, topology
from janus.broker.batch import BatchChannel, Later, Outgoing
from janus.core.jobs import Admission
from janus.core.outbox import OutboxMessage
from janus.errors import BrokerError
from janus.protocol import CONTENT_TYPE, encode_ready

PERSISTENT = 2
T = TypeVar("T")


def _ttl(admission: Admission) -> str:
    """The admission's time to live in the ready queue, in milliseconds (at least 1)."""
    return str(max(round((admission.expires_at - admission.admitted_at) * 1000), 1))


class Publisher:
    def __init__(self, channel: AbstractChannel, raw: RawChannel) -> None:
        self._channel = channel
        self._raw = raw
        assert isinstance(raw, Channel)
        self._batch = BatchChannel(raw)

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
        return await self.start_admissions(admissions)

    def start_admissions(self, admissions: Sequence[Admission]) -> Awaitable[list[Admission]]:
        """`publish_admissions` begun now: written before this returns when the channel is free
        (broker/batch.py); the awaitable gives the refused ones once every confirm is in. It may
        be dropped unawaited without a warning (broker/batch.py, `Later`)."""
        messages = [
            Outgoing(
                body=encode_ready(admission),
                exchange=topology.READY_EXCHANGE,
                routing_key=admission.dependency,
                properties=spec.Basic.Properties(
                    content_type=CONTENT_TYPE,
                    delivery_mode=PERSISTENT,
                    message_id=admission.job_id,  # also how a returned (unroutable) publish is matched
                    expiration=_ttl(admission),
                ),
                mandatory=True,
            )
            for admission in admissions
        ]
        return self._start_all(admissions, messages)

    async def publish_outcomes(self, messages: Sequence[OutboxMessage]) -> list[OutboxMessage]:
        """Publish outcome messages from the outbox (not mandatory: nobody need listen); the ones
        the broker refused. Every other one is confirmed: the outbox may forget it."""
        return await self.start_outcomes(messages)

    def start_outcomes(self, messages: Sequence[OutboxMessage]) -> Awaitable[list[OutboxMessage]]:
        """`publish_outcomes` begun now, like `start_admissions`."""
        outgoing = [
            Outgoing(
                body=message.body,
                exchange=topology.OUTCOMES_EXCHANGE,
                routing_key=message.routing_key,
                properties=spec.Basic.Properties(
                    content_type=CONTENT_TYPE, delivery_mode=PERSISTENT, message_id=message.job_id
                ),
            )
            for message in messages
        ]
        return self._start_all(messages, outgoing)

    def _start_all(self, items: Sequence[T], messages: Sequence[Outgoing]) -> Awaitable[list[T]]:
        """Every message written at once (one batch: broker/batch.py), started now; the confirms
        looked at only when awaited."""
        return Later(partial(self._refused, items, self._batch.start(messages) if items else None))

    async def _refused(self, items: Sequence[T], confirming: Awaitable[list[object]] | None) -> list[T]:
        """Every confirm awaited; the items the broker refused. A closed channel is raised, not
        returned: nothing more can be published on it."""
        if confirming is None:
            return []
        try:
            outcomes = await confirming
        except (Exception, asyncio.CancelledError) as exc:
            # A closing channel fails its pending futures with its reason (or cancels them).
            if self._channel.is_closed:
                raise BrokerError(f"the publishing channel closed: {exc!r}") from exc
            if isinstance(exc, BROKER_ERRORS):
                raise BrokerError(f"publishing failed: {exc!r}") from exc
            raise
        failed = [
            item
            for item, outcome in zip(items, outcomes, strict=True)
            if not isinstance(outcome, spec.Basic.Ack)
        ]
        if failed and self._channel.is_closed:
            raise BrokerError("the publishing channel closed") from next(
                o for o in outcomes if isinstance(o, BaseException)
            )
        return failed

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
