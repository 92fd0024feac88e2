"""The load of the benchmarks: a producer and a worker, each its own process, the same for every variant.

Both are the Janus SDK (janus.client). Every job carries its publish time in its
payload ({"t": unix seconds}), so the worker can tell how long it took to arrive.

  python -m benchmarks.load producer --amqp-url URL --jobs N --prefix P [--rate R]
      publishes N jobs (as fast as confirms allow, or paced at R jobs/s) and prints
      one JSON line: first publish time, last confirm time, CPU seconds.
  python -m benchmarks.load worker --amqp-url URL --expect N [--latencies] [--holds]
          [--dependency D ...] [--prefetch P] [--handler-ms MS]
      prints "ready" once consuming; after N jobs have run (or on SIGTERM) and their
      results are confirmed, prints one JSON line: completion time, outcomes, CPU seconds and,
      with --latencies, each job's delay from publish to receipt; with --holds, each
      admission's [dependency, admitted_at, received_at, started_at] (how long the
      worker held it before starting, and where).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import uvloop
from pydantic import JsonValue

from janus.client.producer import Producer
from janus.client.worker import ReadyJob, Worker, WorkRecord


def _jobs(prefix: str, count: int, dependency: str) -> Iterator[tuple[str, str, JsonValue, str]]:
    # A generator: each job's time is read as it is published, not when the list was built.
    for index in range(count):
        yield f"{prefix}-{index}", dependency, {"t": time.time()}, "default"


async def produce(
    amqp_url: str, prefix: str, count: int, dependency: str, rate: float, window: int
) -> dict[str, Any]:
    producer = await Producer.connect(amqp_url, name=f"bench-producer-{prefix}")
    async with producer:
        cpu = time.process_time()
        first = time.time()
        if rate <= 0:
            await producer.submit_many(_jobs(prefix, count, dependency), window=window)
            last_publish = time.time()
        else:
            last_publish = await _paced(producer, _jobs(prefix, count, dependency), count, rate)
        last = time.time()
        cpu = time.process_time() - cpu
    return {
        "jobs": count,
        "first_publish": first,
        "last_publish": last_publish,
        "last_confirm": last,
        "cpu": cpu,
    }


async def _paced(
    producer: Producer, jobs: Iterator[tuple[str, str, JsonValue, str]], count: int, rate: float
) -> float:
    """Publish at `rate` jobs/s on a fixed schedule; confirms are awaited alongside, never in the way.

    Returns when the last job was handed to the client.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending: list[asyncio.Future[None]] = []
    published = 0
    last = time.time()
    while published < count:
        due = min(int((loop.time() - start) * rate) + 1, count)
        while published < due:
            job_id, dependency, payload, scope = next(jobs)
            pending.append(asyncio.ensure_future(producer.submit(job_id, dependency, payload, scope=scope)))
            published += 1
        last = time.time()
        if published < count:
            await asyncio.sleep(max(start + published / rate - loop.time(), 0.0))
    await asyncio.gather(*pending)
    return last


async def work(
    amqp_url: str,
    expect: int,
    dependencies: list[str],
    keep_latencies: bool,
    timeout: float,
    *,
    keep_holds: bool = False,
    prefetch: int | None = None,
    handler_seconds: float = 0.0,
) -> dict[str, Any]:
    sent: dict[str, float] = {}
    latencies: list[float] = []
    holds: list[tuple[str, float, float, float | None]] = []
    outcomes: dict[str, int] = {}
    first_received: float | None = None
    enough = asyncio.Event()

    async def handler(job: ReadyJob) -> None:
        published = job.payload.get("t") if isinstance(job.payload, dict) else None
        if isinstance(published, float):
            sent[job.job_id] = published
        if handler_seconds:
            await asyncio.sleep(handler_seconds)  # the call to the dependency

    def on_record(record: WorkRecord) -> None:
        nonlocal first_received
        if first_received is None:
            first_received = record.received_at
        outcomes[record.outcome] = outcomes.get(record.outcome, 0) + 1
        published = sent.pop(record.job_id, None)
        if keep_latencies and published is not None:
            latencies.append(record.received_at - published)
        if keep_holds:
            holds.append((record.dependency, record.admitted_at, record.received_at, record.started_at))
        if sum(outcomes.values()) >= expect:
            enough.set()

    options: dict[str, Any] = {} if prefetch is None else {"prefetch": prefetch}
    handlers = dict.fromkeys(dependencies, handler)
    worker = Worker(amqp_url, handlers, on_record=on_record, name="bench-worker", **options)
    # SIGTERM ends the run as reaching `expect` does: several workers share one stream of jobs.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, enough.set)
    await worker.start()
    print("ready", flush=True)
    cpu = time.process_time()
    timed_out = False
    try:
        await asyncio.wait_for(enough.wait(), timeout=timeout)
    except TimeoutError:
        timed_out = True
    # Lets the running handlers finish and their results be confirmed: then the work is done.
    await worker.stop()
    done = time.time()
    cpu = time.process_time() - cpu
    return {
        "jobs": sum(outcomes.values()),
        "outcomes": outcomes,
        "timed_out": timed_out,
        "first_received": first_received,
        "done_at": done,
        "cpu": cpu,
        "latencies": latencies,
        "holds": holds,
    }


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Producer and worker processes of the benchmarks.")
    roles = parser.add_subparsers(dest="role", required=True)
    producer = roles.add_parser("producer")
    producer.add_argument("--amqp-url", required=True)
    producer.add_argument("--jobs", type=int, required=True)
    producer.add_argument("--prefix", required=True, help="job ids are PREFIX-0, PREFIX-1, ...")
    producer.add_argument("--dependency", default="bench")
    producer.add_argument("--rate", type=float, default=0.0, help="jobs/s; 0: as fast as confirms allow")
    producer.add_argument("--window", type=int, default=500, help="confirms in flight when unpaced")
    worker = roles.add_parser("worker")
    worker.add_argument("--amqp-url", required=True)
    worker.add_argument("--expect", type=int, required=True, help="stop after this many jobs")
    worker.add_argument(
        "--dependency", action="append", help="handled dependency (repeatable; default bench)"
    )
    worker.add_argument("--latencies", action="store_true", help="report each job's publish-to-receipt delay")
    worker.add_argument("--holds", action="store_true", help="report each admission's times (see above)")
    worker.add_argument("--prefetch", type=int, help="the SDK worker's prefetch (default: its own)")
    worker.add_argument("--handler-ms", type=float, default=0.0, help="each job's handler sleeps this long")
    worker.add_argument("--timeout", type=float, default=240.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    if args.role == "producer":
        report = uvloop.run(
            produce(args.amqp_url, args.prefix, args.jobs, args.dependency, args.rate, args.window)
        )
    else:
        report = uvloop.run(
            work(
                args.amqp_url,
                args.expect,
                args.dependency or ["bench"],
                args.latencies,
                args.timeout,
                keep_holds=args.holds,
                prefetch=args.prefetch,
                handler_seconds=args.handler_ms / 1000,
            )
        )
    print(json.dumps(report), flush=True)
    return 1 if report.get("timed_out") else 0


if __name__ == "__main__":
    sys.exit(cli())
