"""Janus with quorum queues against Janus with classic queues, in one run (no relay, no paced
phase): `python -m benchmarks.throughput --queue-types [--jobs 5000] [--rounds 3]`. Each round
runs both, the order alternating, each on a vhost and a database of its own; the ratio
quorum/classic of throughput and of RabbitMQ's CPU per job."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg
import uvloop

from benchmarks._processes import BenchmarkError, Child
from benchmarks.throughput import Services, Throughput, _us, run_janus
from janus.errors import JanusError


async def run_queue_types(services: Services, jobs: int, rounds: int) -> list[tuple[Throughput, float]]:
    """Janus with classic, then quorum queues (the order alternating by round): (run, load average)."""
    runs: list[tuple[Throughput, float]] = []
    for index in range(rounds):
        order = ("classic", "quorum") if index % 2 == 0 else ("quorum", "classic")
        for queue_type in order:
            tag = uuid.uuid4().hex[:8]
            vhost, database = f"janus-bench-{queue_type}-{tag}", f"janus_bench_{tag}"
            with tempfile.TemporaryDirectory(prefix="janus-bench-") as tmp:
                try:
                    await services.create_vhost(vhost)
                    await services.create_database(database)
                    run, _ = await run_janus(
                        services, vhost, database, jobs, Path(tmp), queue_type=queue_type, paced=False
                    )
                    runs.append((run, os.getloadavg()[0]))
                finally:
                    await Child.kill_all()
                    with contextlib.suppress(JanusError):
                        await services.delete_vhost(vhost)
                    with contextlib.suppress(JanusError, OSError, asyncpg.PostgresError):
                        await services.drop_database(database)
    return runs


def report_queue_types(runs: list[tuple[Throughput, float]]) -> str:
    lines = [f"jobs per run: {runs[0][0].jobs}"]
    for run, load in runs:
        lines.append(
            f"  {run.variant:<14}: {run.rate:5.0f} jobs/s  janus cpu {_us(run.coordinator_cpu, run.jobs)}  "
            f"rabbitmq cpu {_us(run.broker_cpu, run.jobs)}  load average {load:.2f}"
        )
    by_type: dict[str, list[Throughput]] = {}
    for run, _ in runs:
        by_type.setdefault(run.variant, []).append(run)
    quorum, classic = by_type["janus-quorum"], by_type["janus-classic"]
    rates = [q.rate / c.rate for q, c in zip(quorum, classic, strict=True)]
    broker = [q.broker_cpu / c.broker_cpu for q, c in zip(quorum, classic, strict=True)]
    lines.append(f"ratio quorum/classic, throughput by round: {', '.join(f'{r:.2f}' for r in rates)}")
    lines.append(
        f"ratio quorum/classic, rabbitmq cpu per job by round: {', '.join(f'{r:.2f}' for r in broker)}"
    )
    return "\n".join(lines)


def main(services: Services, jobs: int, rounds: int) -> int:
    try:
        runs = uvloop.run(run_queue_types(services, jobs, rounds))
    except (BenchmarkError, JanusError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print(report_queue_types(runs))
    return 0
