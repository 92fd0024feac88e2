"""A worker that breaks one duty of the protocol, for the conformance tests.

`python -m tests.integration.broken_worker MODE`, with the conformance environment. It
follows the protocol except in the one way MODE names, so that the conformance run of
each mode must fail exactly the matching rule.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from janus.broker import topology
from janus.client import RetryAfter
from janus.client.acked import AckedAdmissions
from janus.conformance.contract import ENV_AMQP_URL, ENV_DEPENDENCIES
from janus.conformance.handler import handle
from janus.protocol import CONTENT_TYPE, decode_ready, encode_result

MODES = (
    "acks-after-work",
    "ignores-expires-at",
    "drops-expired",
    "no-lease-cutoff",
    "empty-routing-key",
    "no-confirms",
    "starts-redelivered",
)
LEASE_MARGIN = 0.5


async def main(mode: str) -> None:
    connection = await aio_pika.connect(os.environ[ENV_AMQP_URL])
    dependency = os.environ[ENV_DEPENDENCIES]
    channel = await connection.channel(publisher_confirms=mode != "no-confirms")
    await channel.set_qos(prefetch_count=10)
    results = await channel.get_exchange(topology.RESULTS_EXCHANGE, ensure=True)
    queue = await channel.get_queue(topology.ready_queue(dependency), ensure=True)
    running: set[asyncio.Task[None]] = set()
    started = AckedAdmissions()

    async def work(message: AbstractIncomingMessage) -> None:
        job = decode_ready(message.body)
        if (
            mode != "starts-redelivered"
            and message.redelivered
            and started.started_here(job.job_id, job.attempt, time.time())
        ):
            await message.ack()  # a copy of one it started (an ack the broker never read)
            return
        if mode != "ignores-expires-at" and time.time() >= job.expires_at:
            if mode == "drops-expired":
                await message.ack()  # gone: Janus gets its slot back only when the lease ends
            else:
                await message.reject(requeue=False)
            return
        if mode != "acks-after-work":
            await message.ack()
        started.remember(job.job_id, job.attempt, job.expires_at, job.lease_expires_at, time.time())
        error, retry_after = None, None
        try:
            if mode == "no-lease-cutoff" or job.lease_expires_at is None:
                await handle(job)
            else:
                await asyncio.wait_for(handle(job), job.lease_expires_at - LEASE_MARGIN - time.time())
        except RetryAfter as exc:
            error, retry_after = str(exc), exc.seconds
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        if mode == "acks-after-work":
            await message.ack()
        body = encode_result(
            job_id=job.job_id,
            attempt=job.attempt,
            outcome="success" if error is None else "failure",
            error=error,
            retry_after=retry_after,
        )
        message_out = aio_pika.Message(
            body, content_type=CONTENT_TYPE, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        await results.publish(message_out, routing_key="" if mode == "empty-routing-key" else job.dependency)

    async def on_message(message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(work(message))
        running.add(task)
        task.add_done_callback(running.discard)

    await queue.consume(on_message)
    await asyncio.Event().wait()  # until the harness stops it (SIGTERM, or SIGKILL)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in MODES:
        sys.exit(f"usage: python -m tests.integration.broken_worker {{{','.join(MODES)}}}")
    asyncio.run(main(sys.argv[1]))
