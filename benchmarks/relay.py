"""The baseline: a bare relay, no database and no limits, on the same topology as Janus.

It consumes janus.intake, publishes each job to janus.ready (routing key = the
dependency) with publisher confirms, pipelined, and acks the intake once the
confirms of a batch are in; it consumes the dependency's results queue and acks them in batches.
Its messages look to the broker and the workers exactly like Janus's admissions
(persistent, mandatory, with the same per-message TTL), so that the difference
between the two measures Janus's own work.

Run: python -m benchmarks.relay --amqp-url URL --dependency bench [--ttl 30]
It prints "ready" once consuming, and its counters as one JSON line after SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Sequence

import aio_pika
import uvloop
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from janus.broker import topology
from janus.protocol import CONTENT_TYPE

PREFETCH = 2000  # Janus's count (janus.service.app.PREFETCH) before its bound in bytes: what is in flight


class Relay:
    def __init__(self, ready: AbstractExchange, ttl: float) -> None:
        self._ready = ready
        self._ttl = ttl
        self._intake: list[AbstractIncomingMessage] = []
        self._results: list[AbstractIncomingMessage] = []
        self._wake = asyncio.Event()
        self._last_ack: asyncio.Task[None] | None = None
        self.forwarded = 0
        self.results = 0

    async def on_intake(self, message: AbstractIncomingMessage) -> None:
        self._intake.append(message)
        self._wake.set()

    async def on_result(self, message: AbstractIncomingMessage) -> None:
        self._results.append(message)
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                waking = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait([waking, stopping], return_when=asyncio.FIRST_COMPLETED)
                waking.cancel()
                await self.pump()
        finally:
            stopping.cancel()
        await self.pump()
        if self._last_ack is not None:
            await self._last_ack

    async def pump(self) -> None:
        """Forward everything delivered since the last pump; ack the results seen."""
        self._wake.clear()
        intake, self._intake = self._intake, []
        results, self._results = self._results, []
        if results:
            await results[-1].ack(multiple=True)
            self.results += len(results)
        if intake:
            confirms = [asyncio.ensure_future(self._forward(message)) for message in intake]
            self._last_ack = asyncio.create_task(
                self._ack_when_confirmed(confirms, intake[-1], self._last_ack)
            )

    async def _forward(self, delivery: AbstractIncomingMessage) -> None:
        job = json.loads(delivery.body)
        now = time.time()
        body = json.dumps(
            {
                "job_id": job["job_id"],
                "dependency": job["dependency"],
                "scope": job.get("scope", "default"),
                "payload": job.get("payload"),
                "attempt": 1,
                "admitted_at": now,
                "expires_at": now + self._ttl,
                "lease_expires_at": None,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        message = aio_pika.Message(
            body,
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=job["job_id"],
            expiration=self._ttl,
        )
        await self._ready.publish(message, routing_key=job["dependency"], mandatory=True)

    async def _ack_when_confirmed(
        self,
        confirms: Sequence[Awaitable[None]],
        last: AbstractIncomingMessage,
        previous: asyncio.Task[None] | None,
    ) -> None:
        await asyncio.gather(*confirms)
        # A multiple-ack covers every earlier delivery too: never before the earlier batches' confirms.
        if previous is not None:
            await previous
        await last.ack(multiple=True)
        self.forwarded += len(confirms)


async def main(amqp_url: str, dependency: str, ttl: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    connection = await aio_pika.connect(amqp_url, client_properties={"connection_name": "bench-relay"})
    async with connection:
        await topology.declare_topology(connection, [dependency])
        publishing = await connection.channel(publisher_confirms=True)
        ready = await publishing.get_exchange(topology.READY_EXCHANGE, ensure=True)
        relay = Relay(ready, ttl)
        consuming = []
        for name, callback in (
            (topology.INTAKE_QUEUE, relay.on_intake),
            (topology.results_queue(dependency), relay.on_result),
        ):
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=PREFETCH)
            queue = await channel.get_queue(name, ensure=True)
            consuming.append((queue, await queue.consume(callback)))
        print("ready", flush=True)
        finish = asyncio.Event()
        runner = asyncio.create_task(relay.run(finish))
        await stop.wait()
        # No new deliveries, then forward and ack what was delivered.
        for queue, tag in consuming:
            await queue.cancel(tag)
        finish.set()
        await runner
    print(json.dumps({"forwarded": relay.forwarded, "results": relay.results}), flush=True)
    return 0


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--dependency", default="bench")
    parser.add_argument("--ttl", type=float, default=30.0, help="seconds an admission may wait for a worker")
    args = parser.parse_args(argv)
    return uvloop.run(main(args.amqp_url, args.dependency, args.ttl))


if __name__ == "__main__":
    sys.exit(cli())
