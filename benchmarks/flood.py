"""Does a worker flooding janus.results with garbage slow the admissions of a well-behaved dependency?

One `janus run` process (a fresh database and vhost) with two dependencies: `bench`, the
healthy one whose admissions are measured, and `flooded`. The producer and worker
processes of benchmarks.load run `bench` jobs, in three phases of --jobs jobs each on
that same Janus: a baseline, the same load while a flooder process publishes --flood bad
results to janus.results, and a baseline again. Admissions per second = jobs / (first
publish to the last result confirmed); each job is admitted once. The ratio compares the
flood phase with the mean of the two baselines of the same run.

--target other (the default): the flood comes from a worker of `flooded`,
routing key `flooded` (the only key its broker user may use), into that dependency's
results queue. --target same: from a worker of `bench` itself, routing key `bench`, into
the measured dependency's own results queue (routing cannot help there: only CPU counts).
--target none, the control: the same flood, published the same way, into a queue nobody
reads. Janus does nothing with it, so what the flood costs `bench` then is the flooder's
and RabbitMQ's share of the machine, not Janus's: compare the other targets with it.
--target held: the same, but a consumer in the flooder process takes a prefetch of 1,000 from
that queue and never acks, as Janus's consumer of a flooded queue holds its deliveries: what
a consumed flood costs the broker, still without Janus.

The flood is a mix a broken or hostile worker could send: not JSON; fields of the
wrong type; results for jobs that never existed; forged results for the `bench` jobs
being run, with an attempt that is not current. Janus must set every one aside on
janus.rejected (checked at the end) while it keeps admitting.

    .venv/bin/python -m benchmarks.flood [--target other|same|none] [--jobs 5000] [--flood 10000]
                                         [--rate-limit 100/1s]

Unlimited (the default), the dependency's rate is what the machine can do, and the flood
competes with it for CPU: the worst case. With --rate-limit, the dependency is limited
below that, as a real one is: then the question is whether Janus still keeps up with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import uvloop

from benchmarks.throughput import (
    BROKER_PROCESS,
    JANUS_CONFIG,
    PHASE_TIMEOUT,
    BenchmarkError,
    Child,
    JanusCoordinator,
    Services,
    _check_worker,
    _start_producer,
    _start_worker,
    cpu_by_pid,
    cpu_spent,
    janus_env,
)
from benchmarks.throughput import DEPENDENCY as MEASURED
from janus.broker import topology
from janus.errors import JanusError
from janus.protocol import CONTENT_TYPE

FLOODED = "flooded"  # the other dependency: its worker floods (--target other)
SINK = "bench-flood-sink"  # the queue nobody reads (--target none)
HELD_SINK = "bench-flood-held"  # the queue with a consumer that never acks (--target held)
SINKS = (SINK, HELD_SINK)


def bad_result(index: int, prefix: str, jobs: int) -> bytes:
    kind = index % 4
    if kind == 0:
        return f"garbage {index}".encode()
    if kind == 1:
        return json.dumps({"job_id": f"ghost-{index}", "attempt": 1, "outcome": "success"}).encode()
    if kind == 2:
        return json.dumps({"job_id": f"x-{index}", "attempt": "one", "outcome": "maybe"}).encode()
    # A forgery for a job being run now, with an attempt that is not current.
    return json.dumps({"job_id": f"{prefix}-{index % jobs}", "attempt": 7, "outcome": "success"}).encode()


async def flood(
    amqp_url: str, count: int, prefix: str, jobs: int, routing_key: str, window: int = 500
) -> dict[str, Any]:
    connection = await aio_pika.connect(amqp_url, client_properties={"connection_name": "bench-flooder"})
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        results = await channel.get_exchange(topology.RESULTS_EXCHANGE, ensure=True)
        if routing_key in SINKS:  # the controls: routed like results, into a durable queue Janus never reads
            sink = await channel.declare_queue(routing_key, durable=True)
            await sink.bind(results, routing_key=routing_key)
        if routing_key == HELD_SINK:
            # Takes a prefetch of 1,000, as Janus's consumer of a results queue does, and never
            # acks: what a consumed flood costs the broker, without Janus (while the flooder runs).
            holder = await connection.channel()
            await holder.set_qos(prefetch_count=1000)
            kept: list[aio_pika.abc.AbstractIncomingMessage] = []

            async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                kept.append(message)

            await (await holder.get_queue(routing_key)).consume(keep, no_ack=False)
        print("ready", flush=True)
        cpu, first = time.process_time(), time.time()
        pending: list[asyncio.Future[Any]] = []
        for index in range(count):
            message = aio_pika.Message(bad_result(index, prefix, jobs), content_type=CONTENT_TYPE)
            pending.append(asyncio.ensure_future(results.publish(message, routing_key=routing_key)))
            if len(pending) >= window:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return {"count": count, "first": first, "last": time.time(), "cpu": time.process_time() - cpu}


@dataclass(frozen=True, kw_only=True, slots=True)
class Phase:
    name: str
    jobs: int
    seconds: float
    janus_cpu: float  # until Janus caught up, the flood's set-asides included
    # While the jobs ran (first publish to the worker's last job): Janus's and RabbitMQ's CPU.
    janus_cpu_running: float
    broker_cpu_running: float
    admitted_rate: float  # by the admissions' own times: how fast Janus decided, whatever the workers did
    flood: dict[str, Any] | None = None
    set_aside_in: float | None = None  # from the flood's first publish until Janus had set aside all

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


async def admitted_rate(database_url: str, prefix: str) -> float:
    connection = await asyncpg.connect(database_url)
    try:
        first, last, count = await connection.fetchrow(
            "SELECT min(admitted_at), max(admitted_at), count(*) FROM janus.admissions WHERE job_id LIKE $1",
            prefix + "-%",
        )
    finally:
        await connection.close()
    return float((count - 1) / (last - first)) if count > 1 and last > first else float("nan")


async def rejected_count(amqp_url: str) -> int:
    connection = await aio_pika.connect(amqp_url, client_properties={"connection_name": "bench-probe"})
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(topology.REJECTED_QUEUE, passive=True)
        return queue.declaration_result.message_count or 0


async def set_aside_all(amqp_url: str, count: int) -> float:
    """When the rejected queue holds `count` messages (polled: the broker has no event for it)."""
    started = time.monotonic()
    while await rejected_count(amqp_url) < count:
        if time.monotonic() - started > PHASE_TIMEOUT:
            raise BenchmarkError(f"fewer than {count} bad results were set aside")
        await asyncio.sleep(0.05)
    return time.time()


async def run_phase(
    name: str,
    coordinator: JanusCoordinator,
    url: str,
    database_url: str,
    jobs: int,
    workdir: Path,
    results_before: int,
    flood_count: int = 0,
    routing_key: str = FLOODED,
) -> Phase:
    worker = await _start_worker(url, jobs, workdir)
    flooder: Child | None = None
    prefix = f"{name}-tp"
    if flood_count:
        args = ["-m", "benchmarks.flood", "flooder", "--amqp-url", url, "--count", str(flood_count)]
        args += ["--prefix", prefix, "--jobs", str(jobs), "--routing-key", routing_key]
        flooder = await Child.start("flooder", args, workdir)
        await flooder.expect("ready")
    cpu_before, broker_before = coordinator.child.cpu(), cpu_by_pid(BROKER_PROCESS)
    producer = await _start_producer(url, jobs, prefix, workdir)
    running: list[float] = []

    async def worker_done() -> dict[str, Any]:
        worked = await worker.report()
        running.extend(
            [coordinator.child.cpu() - cpu_before, cpu_spent(broker_before, cpu_by_pid(BROKER_PROCESS))]
        )
        return worked

    flooding = []
    if flooder:
        flooding = [flooder.report(), set_aside_all(url, flood_count if routing_key not in SINKS else 0)]
    reports = await asyncio.gather(producer.report(), worker_done(), *flooding)
    produced, worked = reports[0], reports[1]
    _check_worker(worked, jobs)
    await coordinator.caught_up(results_before + jobs, timeout=PHASE_TIMEOUT)
    return Phase(
        name=name,
        jobs=jobs,
        seconds=worked["done_at"] - produced["first_publish"],
        janus_cpu=coordinator.child.cpu() - cpu_before,
        janus_cpu_running=running[0],
        broker_cpu_running=running[1],
        admitted_rate=await admitted_rate(database_url, prefix),
        flood=reports[2] if flooder else None,
        set_aside_in=reports[3] - reports[2]["first"] if flooder and routing_key not in SINKS else None,
    )


def janus_config(rate_limit: str | None, bad_results_limit: str | None = None) -> str:
    config = JANUS_CONFIG  # [dependencies.bench], unlimited
    if bad_results_limit is not None:  # a top-level key: before the first table
        config = f'bad_results_limit = "{bad_results_limit}"\n' + config
    if rate_limit is not None:
        config += f'rate_limits = ["{rate_limit}"]\n'
    return config + f'\n[dependencies.{FLOODED}]\nlease_timeout = "60s"\n'


async def run(
    services: Services,
    jobs: int,
    flood_count: int,
    rate_limit: str | None = None,
    target: str = "other",
    bad_results_limit: str | None = None,
) -> tuple[list[Phase], int]:
    routing_key = {"other": FLOODED, "same": MEASURED, "none": SINK, "held": HELD_SINK}[target]
    with tempfile.TemporaryDirectory(prefix="janus-flood-") as tmp:
        workdir = Path(tmp)
        async with services.scratch("janus_bench_flood") as scratch:
            try:
                url, database_url, database = scratch.amqp_url, scratch.database_url, scratch.name
                config = workdir / "janus.toml"
                config.write_text(janus_config(rate_limit, bad_results_limit), encoding="utf-8")
                env = janus_env(url, database_url)
                janus = await Child.start(
                    "janus", ["-m", "janus.cli", "run", "--config", str(config)], workdir, env
                )
                await janus.wait_for_stderr("leading as", timeout=60.0)
                coordinator = JanusCoordinator(janus, database_url, database)
                phases = []
                for index, (name, count) in enumerate(
                    [("baseline", 0), ("flood", flood_count), ("baseline-again", 0)]
                ):
                    phases.append(
                        await run_phase(
                            name,
                            coordinator,
                            url,
                            database_url,
                            jobs,
                            workdir,
                            index * jobs,
                            count,
                            routing_key,
                        )
                    )
                rejected = await rejected_count(url)
                expected = 0 if routing_key in SINKS else flood_count
                if rejected != expected:
                    raise BenchmarkError(f"{rejected} messages set aside, expected {expected}")
                code = await janus.stop()
                if code != 0:
                    raise BenchmarkError(f"janus exited {code} on SIGTERM\n{janus.stderr_tail()}")
                return phases, rejected
            finally:
                await Child.kill_all()


def report(phases: list[Phase], rejected: int) -> str:
    lines = []
    for phase in phases:
        line = (
            f"{phase.name:<15}: {phase.jobs} jobs in {phase.seconds:5.2f} s = {phase.rate:5.0f} jobs/s at the "
            f"worker, {phase.admitted_rate:5.0f} admissions/s by admitted_at; "
            f"janus cpu {phase.janus_cpu / phase.jobs * 1e6:.0f} µs/job"
            f"\n{'':17}while the jobs ran: janus {phase.janus_cpu_running / phase.seconds:.2f} core, "
            f"rabbitmq {phase.broker_cpu_running / phase.seconds:.2f} core"
        )
        if phase.flood is not None:
            flooded = phase.flood["last"] - phase.flood["first"]
            line += (
                f"\n{'':17}flood: {phase.flood['count']} bad results published in {flooded:.2f} s "
                f"(the flooder's own cpu: {phase.flood['cpu']:.1f} s, on the same machine), "
                + (
                    f"all set aside {phase.set_aside_in:.2f} s after the first"
                    if phase.set_aside_in is not None
                    else "into a queue Janus does not read"
                )
            )
        lines.append(line)
    baseline = (phases[0].rate + phases[2].rate) / 2
    lines.append(f"bad results set aside on {topology.REJECTED_QUEUE}: {rejected}")
    admitted = (phases[0].admitted_rate + phases[2].admitted_rate) / 2
    lines.append(
        f"ratio flood/baseline: {phases[1].rate / baseline:.2f} at the worker, "
        f"{phases[1].admitted_rate / admitted:.2f} by admitted_at"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Admissions per second with and without a flood of bad results."
    )
    roles = parser.add_subparsers(dest="role")
    flooder = roles.add_parser("flooder", help="(internal) the flooding process")
    flooder.add_argument("--amqp-url", required=True)
    flooder.add_argument("--count", type=int, required=True)
    flooder.add_argument("--prefix", required=True)
    flooder.add_argument("--jobs", type=int, required=True)
    flooder.add_argument("--routing-key", required=True)
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per phase (default 5000)")
    parser.add_argument("--flood", type=int, default=10_000, help="bad results in the flood (default 10000)")
    parser.add_argument(
        "--amqp-base", default="amqp://guest:guest@127.0.0.1:5672", help="AMQP URL without vhost"
    )
    parser.add_argument(
        "--pg-base", default="postgresql://postgres@127.0.0.1:5432", help="PostgreSQL URL without db"
    )
    parser.add_argument("--rate-limit", help='the dependency\'s rate limit, e.g. "100/1s" (default: none)')
    parser.add_argument(
        "--target",
        choices=("other", "same", "none", "held"),
        default="other",
        help=f"flood {FLOODED!r}'s results queue (other, default), the measured {MEASURED!r}'s own "
        "(same), a queue nobody reads (none: the control), or one that a consumer other than Janus "
        "takes 1,000 of and never acks (held: the broker's share of a consumed flood)",
    )
    parser.add_argument(
        "--bad-results-limit",
        help="Janus's bad_results_limit, e.g. \"1000000/1s\" to take it out of the way (default: Janus's)",
    )
    parser.add_argument("--rabbitmqctl", default="rabbitmqctl")
    args = parser.parse_args(argv)
    if args.role == "flooder":
        report_ = uvloop.run(flood(args.amqp_url, args.count, args.prefix, args.jobs, args.routing_key))
        print(json.dumps(report_), flush=True)
        return 0
    services = Services(amqp_base=args.amqp_base, pg_base=args.pg_base, rabbitmqctl=(args.rabbitmqctl,))
    try:
        phases, rejected = uvloop.run(
            run(services, args.jobs, args.flood, args.rate_limit, args.target, args.bad_results_limit)
        )
    except (BenchmarkError, JanusError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    flooded = {
        "other": FLOODED,
        "same": MEASURED,
        "none": f"{SINK} (read by nobody)",
        "held": f"{HELD_SINK} (1,000 taken, never acked)",
    }[args.target]
    print(
        f"measured dependency {MEASURED!r}, rate limit: {args.rate_limit or 'none'}; flood into {flooded!r}; "
        f"bad_results_limit: {args.bad_results_limit or 'default'}"
    )
    print(report(phases, rejected))
    return 0


if __name__ == "__main__":
    sys.exit(main())
