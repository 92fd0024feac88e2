"""The baseline: a bare relay, no database and no limits, on the same topology as Janus.

It consumes janus.intake, publishes each job to janus.ready (routing key = the
dependency) with publisher confirms, pipelined, and acks the intake once the
confirms of a batch are in; it consumes the dependency's results queue and acks them in batches.
Its messages look to the broker and the workers exactly like Janus's admissions
(persistent, mandatory, with the same per-message TTL), so that the difference
between the two measures Janus's own work.

With --database-url, a durable relay: what any coordinator that commits before it publishes
must do, and nothing more. Per pump, one statement, committed, writes the batch of intake
deliveries (an INSERT of their job ids) and the batch of results (an UPDATE of their states);
only then are the intake's jobs published and the results acked. One connection, one table (`relay_jobs`, made if
absent); no limits, no decisions. The difference between it and Janus is Janus's own work
beyond the commit that its guarantee requires.

Run: python -m benchmarks.relay --amqp-url URL --dependency bench [--ttl 30] [--database-url URL]
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
from typing import Any

import aio_pika
import asyncpg
import uvloop
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from janus.broker import topology
from janus.protocol import CONTENT_TYPE

PREFETCH = 2000  # Janus's count (janus.service.app.PREFETCH) before its bound in bytes: what is in flight
APPLICATION_NAME = "bench-relay"  # its PostgreSQL session's name, so that a test can find it

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS relay_jobs (
    job_id text PRIMARY KEY,
    state text NOT NULL,
    updated_at timestamptz NOT NULL
)"""
# One statement per pump, so one commit: the intake's rows (a job delivered twice, after a
# crash, keeps its first row, as Janus ignores a known id; the relay still forwards it) and the
# results' final states. Data-modifying CTEs run whether or not the query reads them.
RECORD_BATCH = """
WITH admitted AS (
    INSERT INTO relay_jobs (job_id, state, updated_at)
    SELECT job_id, 'admitted', now() FROM unnest($1::text[]) AS intake(job_id)
    ON CONFLICT (job_id) DO NOTHING
), finished AS (
    UPDATE relay_jobs SET state = results.state, updated_at = now()
    FROM unnest($2::text[], $3::text[]) AS results(job_id, state)
    WHERE relay_jobs.job_id = results.job_id
)
SELECT 1"""
FINAL_STATE = {"success": "succeeded", "failure": "failed"}


class JobTable:
    """The durable relay's record: each statement alone, so committed when it returns."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    @classmethod
    async def open(cls, database_url: str) -> JobTable:
        # Planned once, as Janus plans its tick statement: the floor pays no more than Janus.
        settings = {"application_name": APPLICATION_NAME, "plan_cache_mode": "force_generic_plan"}
        connection = await asyncpg.connect(database_url, server_settings=settings)
        await connection.execute(CREATE_TABLE)
        return cls(connection)

    async def record(self, admitted: list[str], finished: list[str], states: list[str]) -> None:
        """Insert the admitted jobs and set the finished ones' states, in one commit."""
        await self._connection.execute(RECORD_BATCH, admitted, finished, states)

    async def close(self) -> None:
        await self._connection.close()


class Relay:
    def __init__(self, ready: AbstractExchange, ttl: float, table: JobTable | None = None) -> None:
        self._ready = ready
        self._ttl = ttl
        self._table = table
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
        """Forward everything delivered since the last pump; ack the results seen (durable:
        each batch committed first)."""
        self._wake.clear()
        intake, self._intake = self._intake, []
        results, self._results = self._results, []
        jobs = [json.loads(message.body) for message in intake]
        if self._table is not None and (jobs or results):
            # Committed before the first publish and the first ack: a crash after it loses no
            # admission, and a result acked is a result recorded.
            finished = [json.loads(message.body) for message in results]
            await self._table.record(
                [job["job_id"] for job in jobs],
                [result["job_id"] for result in finished],
                [FINAL_STATE.get(result.get("outcome"), "failed") for result in finished],
            )
        await self._ack_results(results)
        if intake:
            confirms = [asyncio.ensure_future(self._forward(job)) for job in jobs]
            self._last_ack = asyncio.create_task(
                self._ack_when_confirmed(confirms, intake[-1], self._last_ack)
            )

    async def _ack_results(self, results: list[AbstractIncomingMessage]) -> None:
        if results:
            await results[-1].ack(multiple=True)
            self.results += len(results)

    async def _forward(self, job: dict[str, Any]) -> None:
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


async def main(amqp_url: str, dependency: str, ttl: float, database_url: str | None = None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    table = None if database_url is None else await JobTable.open(database_url)
    try:
        return await _relay(amqp_url, dependency, ttl, table, stop)
    finally:
        if table is not None:
            await table.close()


async def _relay(
    amqp_url: str, dependency: str, ttl: float, table: JobTable | None, stop: asyncio.Event
) -> int:
    connection = await aio_pika.connect(amqp_url, client_properties={"connection_name": "bench-relay"})
    async with connection:
        await topology.declare_topology(connection, [dependency])
        publishing = await connection.channel(publisher_confirms=True)
        ready = await publishing.get_exchange(topology.READY_EXCHANGE, ensure=True)
        relay = Relay(ready, ttl, table)
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
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([runner, stopping], return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            # The relay failed (its database gone): exit at once, its intake unacked.
            stopping.cancel()
            await runner
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
    parser.add_argument(
        "--database-url", help="a durable relay: commit each batch to this PostgreSQL database first"
    )
    args = parser.parse_args(argv)
    return uvloop.run(main(args.amqp_url, args.dependency, args.ttl, args.database_url))


if __name__ == "__main__":
    sys.exit(cli())
