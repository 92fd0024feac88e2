"""Publish job references to janus.intake, with publisher confirms and `mandatory`.

A publish no queue takes (Janus's intake queue not declared yet, a vhost without it) is
returned by the broker (basic.return) *before* its confirm, and the confirm then succeeds:
a producer that only awaits confirms loses the job silently. `submit` raises `NotRouted`
for it instead (aio-pika matches the return to its publish by `message_id`, the job id).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aiormq import spec
from aiormq.exceptions import DeliveryError
from pydantic import JsonValue

from janus.broker import BROKER_ERRORS, topology
from janus.errors import BrokerError, NotRouted
from janus.protocol import CONTENT_TYPE, encode_intake


class Producer:
    def __init__(
        self, connection: AbstractConnection, channel: AbstractChannel, exchange: AbstractExchange
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._exchange = exchange

    @classmethod
    async def connect(cls, amqp_url: str, *, name: str = "janus-producer") -> Producer:
        connection = await aio_pika.connect(amqp_url, client_properties={"connection_name": name})
        channel, exchange = await topology.await_exchange(connection, topology.INTAKE_EXCHANGE, confirms=True)
        return cls(connection, channel, exchange)

    async def submit(
        self, job_id: str, dependency: str, payload: JsonValue = None, *, scope: str = "default"
    ) -> None:
        """Publish one job; returns once the broker has confirmed it. Safe to repeat: Janus deduplicates."""
        body = encode_intake(job_id=job_id, dependency=dependency, scope=scope, payload=payload)
        message = aio_pika.Message(
            body,
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=job_id,
        )
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
