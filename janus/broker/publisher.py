"""Confirmed, pipelined publishing of admissions and of input set aside; outcomes unconfirmed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractChannel
from aiormq import spec
from aiormq.abc import AbstractChannel as RawChannel

from janus.broker import BROKER_ERRORS, topology
from janus.core.jobs import Admission, Job
from janus.errors import BrokerError
from janus.protocol import CONTENT_TYPE, encode_outcome, encode_ready

PERSISTENT = 2


class Publisher:
    def __init__(
        self, channel: AbstractChannel, raw: RawChannel, outcomes: AbstractChannel, outcomes_raw: RawChannel
    ) -> None:
        self._channel = channel
        self._raw = raw
        self._outcomes = outcomes
        self._outcomes_raw = outcomes_raw

    @classmethod
    async def open(cls, connection: aio_pika.abc.AbstractConnection) -> Publisher:
        # on_return_raises: `mandatory` publishes that no queue takes fail loudly.
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.get_exchange(topology.READY_EXCHANGE, ensure=True)
        # Admissions go out through the underlying aiormq channel: an aio_pika.Message per
        # admission costs more CPU than the rest of the publish (see benchmarks/).
        # Outcomes are at most once (docs/protocol.md), so they need no confirm: on a channel
        # of their own without confirms, one costs about 190 µs of CPU instead of 300.
        outcomes = await connection.channel(publisher_confirms=False)
        return cls(
            channel, await channel.get_underlay_channel(), outcomes, await outcomes.get_underlay_channel()
        )

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

    async def publish_outcomes(self, jobs: Sequence[Job]) -> None:
        """Publish finished jobs' outcomes: at most once, unconfirmed, not mandatory (nobody
        need listen). A channel the broker closes ends the term (`closed`)."""
        if not jobs:
            return
        raw = self._outcomes_raw
        try:
            for job in jobs:
                properties = spec.Basic.Properties(
                    content_type=CONTENT_TYPE, delivery_mode=PERSISTENT, message_id=job.job_id
                )
                await raw.basic_publish(
                    encode_outcome(job),
                    exchange=topology.OUTCOMES_EXCHANGE,
                    routing_key=topology.outcome_key(job.dependency, job.state.value),
                    properties=properties,
                )
        except BROKER_ERRORS as exc:
            raise BrokerError(f"could not publish outcomes: {exc!r}") from exc

    async def set_aside(self, body: bytes, source: str, reason: str, detail: str) -> None:
        """Move bad input to the rejected queue with its reason; confirmed before the caller acks it.

        Through the raw channel, like admissions: a worker flooding janus.results with garbage
        makes this a hot path (benchmarks/flood.py).
        """
        properties = spec.Basic.Properties(
            delivery_mode=PERSISTENT,
            headers={
                topology.SOURCE_HEADER: source,
                topology.REASON_HEADER: reason,
                topology.DETAIL_HEADER: detail[:1000],
            },
        )
        try:
            confirmation = await self._raw.basic_publish(
                body, exchange="", routing_key=topology.REJECTED_QUEUE, properties=properties, mandatory=True
            )
        except BROKER_ERRORS as exc:
            raise BrokerError(f"could not set aside a rejected message: {exc!r}") from exc
        if not isinstance(confirmation, spec.Basic.Ack):
            raise BrokerError(f"the broker did not take a rejected message: {confirmation!r}")

    async def closed(self) -> None:
        """Returns when a publishing channel has closed (the broker closed it, or the connection)."""
        waiters = [
            asyncio.ensure_future(self._channel.closed()),
            asyncio.ensure_future(self._outcomes.closed()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def close(self) -> None:
        await self._outcomes.close()
        await self._channel.close()
