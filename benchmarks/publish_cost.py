"""What a confirmed publish costs Janus's process, per message: aiormq's `basic_publish` per
message, gathered (how admissions and outcomes went out before issue 22), against a tick's
messages written as one batch (janus/broker/batch.py), in the same run.

Each round publishes --messages ready messages, in batches of --batch (a tick's admissions),
through the real Publisher (the batch) or through per-message `basic_publish` on the same kind
of channel, every confirm awaited; the two variants alternate round by round. It prints this
process's CPU per message (user+system, `time.process_time`) and messages per second for
each, and their ratio. A vhost of its own; its queue is purged between rounds.

    .venv/bin/python -m benchmarks.publish_cost [--messages 20000] [--batch 50] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import aio_pika
import uvloop
from aiormq import spec

from janus.broker import topology
from janus.broker.publisher import PERSISTENT, Publisher, _ttl
from janus.core.jobs import Admission
from janus.local_services import LocalServices
from janus.protocol import CONTENT_TYPE, encode_ready

DEPENDENCY = "bench"


def admissions(count: int, round_: int) -> list[Admission]:
    now = time.time()
    return [
        Admission(
            job_id=f"r{round_}-{i}",
            dependency=DEPENDENCY,
            scope="default",
            payload={"n": i},
            attempt=1,
            admitted_at=now,
            expires_at=now + 30,
            lease_deadline=now + 60,
        )
        for i in range(count)
    ]


async def per_message(publisher: Publisher, batch: Sequence[Admission]) -> None:
    """Admissions as main published them: one `basic_publish` per message, gathered."""
    raw = await publisher.channel.get_underlay_channel()

    async def one(admission: Admission) -> None:
        properties = spec.Basic.Properties(
            content_type=CONTENT_TYPE,
            delivery_mode=PERSISTENT,
            message_id=admission.job_id,
            expiration=_ttl(admission),
        )
        confirmation = await raw.basic_publish(
            encode_ready(admission),
            exchange=topology.READY_EXCHANGE,
            routing_key=admission.dependency,
            properties=properties,
            mandatory=True,
        )
        assert isinstance(confirmation, spec.Basic.Ack)

    await asyncio.gather(*(one(a) for a in batch))


async def batched(publisher: Publisher, batch: Sequence[Admission]) -> None:
    assert await publisher.publish_admissions(batch) == []


async def run(messages: int, size: int, rounds: int) -> None:
    local = LocalServices()
    vhost = f"janus-bench-publish-{uuid.uuid4().hex[:8]}"
    await local.create_vhost(vhost)
    try:
        connection = await aio_pika.connect(local.amqp_url(vhost))
        async with connection:
            await topology.declare_topology(connection, [DEPENDENCY])
            publisher = await Publisher.open(connection)
            channel = await connection.channel()
            queue = await channel.get_queue(topology.ready_queue(DEPENDENCY), ensure=True)
            variants: dict[str, Callable[[Publisher, Sequence[Admission]], Awaitable[None]]] = {
                "per message": per_message,
                "batch": batched,
            }
            cpu: dict[str, list[float]] = {name: [] for name in variants}
            rate: dict[str, list[float]] = {name: [] for name in variants}
            for round_ in range(rounds):
                order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
                for name in order:
                    jobs = admissions(messages, round_)
                    started, cpu_started = time.perf_counter(), time.process_time()
                    for start in range(0, messages, size):
                        await variants[name](publisher, jobs[start : start + size])
                    cpu[name].append((time.process_time() - cpu_started) / messages)
                    rate[name].append(messages / (time.perf_counter() - started))
                    await queue.purge()
                    print(
                        f"round {round_ + 1} {name:<11}: {cpu[name][-1] * 1e6:6.1f} µs/message  "
                        f"{rate[name][-1]:7.0f} messages/s",
                        flush=True,
                    )
            median = statistics.median
            for name in variants:
                print(
                    f"median {name:<11}: {median(cpu[name]) * 1e6:6.1f} µs/message  "
                    f"{median(rate[name]):7.0f} messages/s"
                )
            ratios = [b / p for b, p in zip(cpu["batch"], cpu["per message"], strict=True)]
            print(f"CPU per message, batch/per message by round: {', '.join(f'{r:.2f}' for r in ratios)}")
    finally:
        await local.delete_vhost(vhost)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50, help="messages per batch (a tick's admissions)")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    uvloop.run(run(args.messages, args.batch, args.rounds))


if __name__ == "__main__":
    main()
