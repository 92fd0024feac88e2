"""Publish job references to janus.intake, with publisher confirms and `mandatory`.

A publish no queue takes (Janus's intake queue not declared yet, a vhost without it) is
returned by the broker (basic.return) *before* its confirm, and the confirm then succeeds:
a producer that only awaits confirms loses the job silently. `submit` raises `NotRouted`
for it instead (aio-pika matches the return to its publish by `message_id`, the job id).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from types import TracebackType

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aio_pika.exceptions import ChannelNotFoundEntity
from aiormq import spec
from aiormq.exceptions import DeliveryError
from pydantic import JsonValue

from janus.broker import BROKER_ERRORS, topology
from janus.broker.connection import close, connect
from janus.errors import BrokerError, NotRouted, ProtocolError, TopologyMissing
from janus.protocol import CONTENT_TYPE, check_identifiers, encode_intake
from janus.urls import redact

# How long `connect` waits for Janus's exchange by default: Janus may be starting up.
CONNECT_TIMEOUT = 30.0


class Producer:
    def __init__(
        self, connection: AbstractConnection, channel: AbstractChannel, exchange: AbstractExchange
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._exchange = exchange
        # Set by `connect`: after a lost connection the next submit reconnects (to the first node
        # of a cluster's URLs that answers) and publishes again; Janus deduplicates job ids.
        self._reconnect_with: tuple[str, str, float] | None = None
        self._reconnecting = asyncio.Lock()

    @classmethod
    async def connect(
        cls, amqp_url: str, *, name: str = "janus-producer", timeout: float = CONNECT_TIMEOUT
    ) -> Producer:
        """Connect, and wait up to `timeout` seconds for janus.intake (Janus declares it).

        Raises ConnectionSettingsError (credentials, vhost, URL), BrokerError (RabbitMQ does not
        answer) or TopologyMissing (no janus.intake: Janus has never run on this vhost)."""
        producer = cls(*await cls._open(amqp_url, name=name, timeout=timeout))
        producer._reconnect_with = (amqp_url, name, timeout)
        return producer

    @staticmethod
    async def _open(
        amqp_url: str, *, name: str, timeout: float
    ) -> tuple[AbstractConnection, AbstractChannel, AbstractExchange]:
        connection = await connect(amqp_url, name=name, timeout=timeout)
        try:
            channel, exchange = await topology.await_exchange(
                connection, topology.INTAKE_EXCHANGE, confirms=True, timeout=timeout
            )
        except ChannelNotFoundEntity:
            await connection.close()
            raise TopologyMissing(
                f"no exchange {topology.INTAKE_EXCHANGE!r} on {redact(amqp_url)}: Janus has never run on "
                f"this vhost (start janus run with it, or load the broker definitions)"
            ) from None
        except BaseException:
            await connection.close()
            raise
        return connection, channel, exchange

    async def _reconnect(self, lost: AbstractConnection) -> None:
        """A new connection in place of `lost` (once, however many submits saw it go)."""
        assert self._reconnect_with is not None
        url, name, timeout = self._reconnect_with
        async with self._reconnecting:
            if self._connection is lost:
                await close(lost)
                self._connection, self._channel, self._exchange = await self._open(
                    url, name=name, timeout=timeout
                )

    async def submit(
        self,
        job_id: str,
        dependency: str,
        payload: JsonValue = None,
        *,
        scope: str = "default",
        cost: float | None = None,
    ) -> None:
        """Publish one job; returns once the broker has confirmed it. Safe to repeat: Janus deduplicates.

        `cost`: the job's estimated units for its dependency's unit limits (default 1: "90000
        units/1m" counts tokens, credits, items); the worker may report the actual cost.

        Raises ProtocolError, before publishing, for a job Janus would set aside (an empty or
        over-long identifier, control characters, NaN in the payload), and BrokerError if the
        broker routed it nowhere or the connection failed."""
        check_identifiers(job_id=job_id, dependency=dependency, scope=scope)
        if cost is not None and not (math.isfinite(cost) and cost >= 0):
            raise ProtocolError(
                "invalid_fields", f"cost: must be a finite number of at least 0, got {cost!r}"
            )
        try:
            body = encode_intake(
                job_id=job_id, dependency=dependency, scope=scope, payload=payload, cost=cost
            )
        except ValueError:
            raise ProtocolError("invalid_fields", "payload: NaN and Infinity are not JSON numbers") from None
        message = aio_pika.Message(
            body,
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=job_id,
        )
        connection = self._connection
        try:
            await self._publish(message, job_id, dependency)
        except BrokerError:
            if self._reconnect_with is None or not (connection.is_closed or self._channel.is_closed):
                raise
            await self._reconnect(connection)
            await self._publish(message, job_id, dependency)

    async def _publish(self, message: aio_pika.Message, job_id: str, dependency: str) -> None:
        # mandatory: a job no queue takes (Janus's topology not declared yet) is an error
        # the caller sees, never a silent loss.
        try:
            await self._exchange.publish(message, routing_key=dependency, mandatory=True)
        except DeliveryError as exc:
            if isinstance(exc.frame, spec.Basic.Return):
                raise NotRouted(
                    f"no queue took job {job_id!r} (routing key {dependency!r}): the broker returned it "
                    f"({exc.frame.reply_text}); is Janus's topology declared on this vhost?"
                ) from exc
            raise BrokerError(f"the broker refused job {job_id!r}: {exc}") from exc
        except BROKER_ERRORS as exc:
            raise BrokerError(f"publishing job {job_id!r} failed: {exc!r}") from exc

    async def submit_many(self, jobs: Iterable[tuple[str, str, JsonValue, str]], *, window: int = 500) -> int:
        """Publish (job_id, dependency, payload, scope) tuples with up to `window` confirms in flight."""
        pending: list[asyncio.Future[None]] = []
        count = 0
        for job_id, dependency, payload, scope in jobs:
            pending.append(asyncio.ensure_future(self.submit(job_id, dependency, payload, scope=scope)))
            count += 1
            if len(pending) >= window:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return count

    async def close(self) -> None:
        await self._connection.close()

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
