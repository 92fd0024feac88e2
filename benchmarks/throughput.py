"""Janus against a bare relay, end to end, in one run, with the same producer and workers.

For each variant, in its own RabbitMQ vhost: a coordinator process (the bare
relay of benchmarks.relay, or the real `janus run` with one unlimited
dependency on a fresh database), one worker process and one producer process
(benchmarks.load). The producer publishes --jobs jobs as fast as confirms
allow; the run ends when the worker has run the last of them and its result is
confirmed. Throughput is jobs / (last result - first publish); CPU per job is
the coordinator's user+system CPU over the run, divided by the jobs.

Then, on the same Janus process, a paced producer publishes at half of
Janus's measured rate, and the worker reports each job's delay from publish to
receipt (intake to ready, through Janus); a fresh relay is timed the same way at
the same pace, as the floor that the broker and the clients set.

The details also show the CPU per job of the other processes: RabbitMQ (the
whole broker, so anything else using it counts too), Janus's PostgreSQL
backends, the producer and the worker. On a small machine the run is CPU-bound
as a whole: a coordinator that makes the others do more work slows them all.

    .venv/bin/python -m benchmarks.throughput [--jobs 20000] [--runs 3]

With --queue-types, Janus with quorum queues against Janus with classic queues instead (no
relay, no paced phase): --rounds rounds, the two alternating which goes first, each on a vhost
and a database of its own; the ratio quorum/classic of throughput and of RabbitMQ's CPU per job.

    .venv/bin/python -m benchmarks.throughput --queue-types [--jobs 5000] [--rounds 3]

Absolute figures are noisy on a shared machine: read the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil  # type: ignore[import-untyped]
import uvloop

from benchmarks._coordinators import (
    DEPENDENCY,
    POLL_EVERY,
    Coordinator,
    JanusCoordinator,
    RelayCoordinator,
)
from benchmarks._processes import (
    BROKER_PROCESS,
    PHASE_TIMEOUT,
    ROOT,
    BenchmarkError,
    Child,
    cpu_by_pid,
    cpu_spent,
    database_cpu_by_pid,
    janus_env,
)
from janus.errors import JanusError
from janus.local_services import LocalServices
from janus.service import worker_watch

# What the other benchmarks import from here though it lives in benchmarks/_processes.py or
# benchmarks/_coordinators.py now.
__all__ = [
    "DEPENDENCY",
    "POLL_EVERY",
    "Coordinator",
    "JanusCoordinator",
    "RelayCoordinator",
    "BROKER_PROCESS",
    "PHASE_TIMEOUT",
    "ROOT",
    "BenchmarkError",
    "Child",
    "cpu_by_pid",
    "cpu_spent",
    "database_cpu_by_pid",
    "janus_env",
]
LATENCY_SECONDS = 15.0  # how long the paced phase lasts, at most
WORKER_POLL_EVERY = worker_watch.POLL_EVERY

JANUS_CONFIG = f"""\
# Written by benchmarks/throughput.py: one dependency, no rate limit, no concurrency limit.
[dependencies.{DEPENDENCY}]
lease_timeout = "60s"
admission_ttl = "30s"
"""
# The throughput runs give admissions longer: a coordinator faster than the worker builds a
# backlog in the ready queue, and at 30 s the last of 10,000 jobs expired there on a loaded
# machine (the worker, not the coordinator, was then measured). Relay and Janus alike.
THROUGHPUT_TTL = 600
THROUGHPUT_CONFIG = JANUS_CONFIG.replace(
    'lease_timeout = "60s"', f'lease_timeout = "{2 * THROUGHPUT_TTL}s"'
).replace('admission_ttl = "30s"', f'admission_ttl = "{THROUGHPUT_TTL}s"')


# -- services --------------------------------------------------------------------


# janus.local_services makes and removes the vhosts and the database of each variant.
Services = LocalServices


# -- measurements ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Throughput:
    variant: str
    jobs: int
    seconds: float  # first publish to the last result confirmed
    drain: float  # after that, until the coordinator had taken in every result
    coordinator_cpu: float
    broker_cpu: float
    database_cpu: float
    producer_cpu: float
    worker_cpu: float
    machine_busy: float  # share of all cores busy over the run, 0..1

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


@dataclass(frozen=True, kw_only=True, slots=True)
class Latency:
    variant: str
    target_rate: float
    achieved_rate: float
    jobs: int
    p50: float
    p99: float
    max: float
    cpu_per_job: float  # the coordinator's own CPU over the phase, per job (seconds)
    database_cpu_per_job: float | None  # its PostgreSQL backends' (None: it writes nothing)


def _machine_busy(before: Any, after: Any) -> float:
    total = sum(after) - sum(before)
    idle = (after.idle + after.iowait) - (before.idle + before.iowait)
    return 1.0 - idle / total if total > 0 else math.nan


def _check_worker(report: dict[str, Any], expect: int) -> None:
    if report["timed_out"] or report["outcomes"] != {"success": expect}:
        raise BenchmarkError(
            f"the worker saw {report['outcomes']} (timed out: {report['timed_out']}), expected {expect} successes"
        )


async def _start_worker(amqp_url: str, expect: int, workdir: Path, *, latencies: bool = False) -> Child:
    args = ["-m", "benchmarks.load", "worker", "--amqp-url", amqp_url, "--expect", str(expect)]
    args += ["--dependency", DEPENDENCY, "--timeout", str(PHASE_TIMEOUT)]
    if latencies:
        args.append("--latencies")
    worker = await Child.start(f"worker-{uuid.uuid4().hex[:4]}", args, workdir)
    await worker.expect("ready")
    return worker


async def _start_producer(amqp_url: str, jobs: int, prefix: str, workdir: Path, rate: float = 0.0) -> Child:
    args = ["-m", "benchmarks.load", "producer", "--amqp-url", amqp_url, "--jobs", str(jobs)]
    args += ["--prefix", prefix, "--dependency", DEPENDENCY, "--rate", repr(rate)]
    return await Child.start(f"producer-{prefix}", args, workdir)


async def measure_throughput(
    variant: str, coordinator: Coordinator, amqp_url: str, jobs: int, workdir: Path, results_before: int = 0
) -> Throughput:
    worker = await _start_worker(amqp_url, jobs, workdir)
    cpu_before, machine_before = coordinator.child.cpu(), psutil.cpu_times()
    broker_before, database_before = cpu_by_pid(BROKER_PROCESS), database_cpu_by_pid(coordinator.database)
    producer = await _start_producer(amqp_url, jobs, f"{variant}-tp", workdir)
    produced, worked = await asyncio.gather(producer.report(), worker.report())
    _check_worker(worked, jobs)
    done = time.time()
    await coordinator.caught_up(results_before + jobs, timeout=PHASE_TIMEOUT)
    drain = time.time() - done
    cpu_after, machine_after = coordinator.child.cpu(), psutil.cpu_times()
    broker_after, database_after = cpu_by_pid(BROKER_PROCESS), database_cpu_by_pid(coordinator.database)
    return Throughput(
        variant=variant,
        jobs=jobs,
        seconds=worked["done_at"] - produced["first_publish"],
        drain=drain,
        coordinator_cpu=cpu_after - cpu_before,
        broker_cpu=cpu_spent(broker_before, broker_after),
        database_cpu=cpu_spent(database_before, database_after),
        producer_cpu=produced["cpu"],
        worker_cpu=worked["cpu"],
        machine_busy=_machine_busy(machine_before, machine_after),
    )


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1]


async def measure_latency(
    variant: str,
    coordinator: Coordinator,
    amqp_url: str,
    rate: float,
    jobs: int,
    workdir: Path,
    results_before: int = 0,
    prefix: str | None = None,
) -> Latency:
    """`prefix`: of the job ids, unique per phase on one Janus (a repeated id is a duplicate)."""
    worker = await _start_worker(amqp_url, jobs, workdir, latencies=True)
    # Janus admits nothing into a ready queue it has not yet seen consumed (it counts consumers
    # every WORKER_POLL_EVERY): published at once, a phase's first jobs waited up to that long
    # behind a worker started for the phase, a wait long-lived workers never see. Both sides
    # get the same pause.
    await asyncio.sleep(2 * WORKER_POLL_EVERY)
    cpu_before, database_before = coordinator.child.cpu(), database_cpu_by_pid(coordinator.database)
    producer = await _start_producer(amqp_url, jobs, prefix or f"{variant}-lat", workdir, rate=rate)
    produced, worked = await asyncio.gather(producer.report(), worker.report())
    _check_worker(worked, jobs)
    await coordinator.caught_up(results_before + jobs, timeout=PHASE_TIMEOUT)
    cpu_after, database_after = coordinator.child.cpu(), database_cpu_by_pid(coordinator.database)
    delays = sorted(worked["latencies"])
    if len(delays) != jobs:
        raise BenchmarkError(f"the worker timed {len(delays)} of {jobs} jobs")
    span = produced["last_publish"] - produced["first_publish"]
    return Latency(
        variant=variant,
        target_rate=rate,
        achieved_rate=(jobs - 1) / span if span > 0 else math.nan,
        jobs=jobs,
        p50=_percentile(delays, 0.50),
        p99=_percentile(delays, 0.99),
        max=delays[-1],
        cpu_per_job=(cpu_after - cpu_before) / jobs,
        database_cpu_per_job=(
            None if coordinator.database is None else cpu_spent(database_before, database_after) / jobs
        ),
    )


# -- the run ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    relay: Throughput
    janus: Throughput
    latency: Latency | None  # None with --no-latency
    relay_latency: Latency | None  # the relay at Janus's half rate: what the broker and clients alone cost
    others: tuple[Throughput, ...] = ()  # the other variants of Janus (`Variant`), same run


@dataclass(frozen=True, kw_only=True, slots=True)
class Variant:
    """Another Janus measured in the same run: without outcome publishes, or another tree."""

    name: str
    outcomes: bool = True  # False: `outcomes = []` for the dependency (no janus.outcomes publish)
    tree: Path = ROOT


@contextlib.asynccontextmanager
async def relay_running(
    name: str, amqp_url: str, jobs: int, workdir: Path, database: tuple[str, str] | None = None
) -> AsyncIterator[RelayCoordinator]:
    """A relay process for one phase of `jobs` jobs; its own count is checked when it stops.
    `database` (its URL, its name): a durable relay, writing to that database."""
    args = ["-m", "benchmarks.relay", "--amqp-url", amqp_url, "--dependency", DEPENDENCY]
    args += ["--ttl", str(THROUGHPUT_TTL)]
    if database is not None:
        args += ["--database-url", database[0]]
    child = await Child.start(name, args, workdir)
    try:
        await child.expect("ready")
        yield RelayCoordinator(child, amqp_url, database)
        child.process.send_signal(signal.SIGTERM)
        counters = await child.report(timeout=30.0)
        if counters != {"forwarded": jobs, "results": jobs}:
            raise BenchmarkError(f"the relay counted {counters}, expected {jobs} of each")
    finally:
        child.kill()


async def run_relay(services: Services, vhost: str, jobs: int, workdir: Path) -> Throughput:
    url = services.amqp_url(vhost)
    async with relay_running("relay", url, jobs, workdir) as relay:
        result = await measure_throughput("relay", relay, url, jobs, workdir)
    return result


async def run_relay_latency(services: Services, vhost: str, rate: float, jobs: int, workdir: Path) -> Latency:
    url = services.amqp_url(vhost)
    async with relay_running("relay-paced", url, jobs, workdir) as relay:
        result = await measure_latency("relay", relay, url, rate, jobs, workdir)
    return result


async def run_janus(
    services: Services,
    vhost: str,
    database: str,
    jobs: int,
    workdir: Path,
    *,
    queue_type: str = "classic",
    paced: bool = True,
    variant: Variant | None = None,
) -> tuple[Throughput, Latency | None]:
    url = services.amqp_url(vhost)
    database_url = services.pg_url(database)
    config = workdir / f"janus-{vhost}.toml"
    text = f'queue_type = "{queue_type}"\n' + THROUGHPUT_CONFIG
    if variant is not None and not variant.outcomes:
        text += "outcomes = []\n"
    config.write_text(text, encoding="utf-8")
    env = janus_env(url, database_url)
    tree = ROOT if variant is None else variant.tree
    args = ["-m", "janus.cli", "run", "--config", str(config)]
    child = await Child.start(f"janus-{vhost}", args, workdir, env, tree=tree)
    try:
        await child.wait_for_stderr("leading as", timeout=60.0)
        coordinator = JanusCoordinator(child, database_url, database)
        name = f"janus-{queue_type}" if variant is None else variant.name
        throughput = await measure_throughput(name, coordinator, url, jobs, workdir)
        if not paced:
            code = await child.stop()
            if code != 0:
                raise BenchmarkError(f"janus exited {code} on SIGTERM\n{child.stderr_tail()}")
            return throughput, None
        rate = throughput.rate / 2
        count = max(min(jobs // 2, int(rate * LATENCY_SECONDS)), 100)
        latency = await measure_latency("janus", coordinator, url, rate, count, workdir, results_before=jobs)
        code = await child.stop()
        if code != 0:
            raise BenchmarkError(f"janus exited {code} on SIGTERM\n{child.stderr_tail()}")
        return throughput, latency
    finally:
        child.kill()


async def run(
    services: Services,
    jobs: int,
    variants: Sequence[Variant] = (),
    *,
    paced: bool = True,
    rotation: int = 0,
) -> Outcome:
    """The relay, Janus, and each of `variants` (each Janus on a vhost and a database of its own),
    the first measured being number `rotation` of that list (then on, round it); then, if
    `paced`, Janus's and the relay's latency at half of Janus's rate."""
    tag = uuid.uuid4().hex[:8]
    relay_vhost = f"janus-bench-relay-{tag}"
    janus_vhosts = [f"janus-bench-janus{index}-{tag}" for index in range(len(variants) + 1)]
    databases = [f"janus_bench_{tag}_{index}" for index in range(len(variants) + 1)]
    created: list[str] = []
    made: list[str] = []
    with tempfile.TemporaryDirectory(prefix="janus-bench-") as tmp:
        workdir = Path(tmp)
        try:
            for vhost in (relay_vhost, *janus_vhosts):
                await services.create_vhost(vhost)
                created.append(vhost)
            for database in databases:
                await services.create_database(database)
                made.append(database)
            # Each run starts with another variant (`rotation`): whoever goes first on the same
            # broker and server is measured slower (about 10-25 % here, this tree against a copy
            # of itself), so a fixed order would favour the last.
            measured: dict[int, tuple[Throughput, Latency | None]] = {}

            async def measure(index: int) -> None:
                if index == 0:
                    measured[0] = (await run_relay(services, relay_vhost, jobs, workdir), None)
                elif index == 1:
                    measured[1] = await run_janus(
                        services, janus_vhosts[0], databases[0], jobs, workdir, paced=paced
                    )
                else:
                    measured[index] = await run_janus(
                        services,
                        janus_vhosts[index - 1],
                        databases[index - 1],
                        jobs,
                        workdir,
                        paced=False,
                        variant=variants[index - 2],
                    )

            count = len(variants) + 2
            for step in range(count):
                await measure((rotation + step) % count)
            relay = measured[0][0]
            janus, latency = measured[1]
            others = [measured[index][0] for index in range(2, count)]
            relay_latency = None
            if latency is not None:
                relay_latency = await run_relay_latency(
                    services, relay_vhost, latency.target_rate, latency.jobs, workdir
                )
            return Outcome(
                relay=relay, janus=janus, latency=latency, relay_latency=relay_latency, others=tuple(others)
            )
        finally:
            await Child.kill_all()
            for vhost in created:
                with contextlib.suppress(JanusError):
                    await services.delete_vhost(vhost)
            for database in made:
                with contextlib.suppress(JanusError, OSError, asyncpg.PostgresError):
                    await services.drop_database(database)


def _us(seconds: float, jobs: int) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds / jobs * 1e6:.0f} µs/job"


def report(outcome: Outcome) -> str:
    relay, janus, latency, reference = outcome.relay, outcome.janus, outcome.latency, outcome.relay_latency
    lines = ["details (drain: after the last job ran, until its coordinator had taken in every result):"]
    for run in (relay, janus, *outcome.others):
        lines.append(
            f"  {run.variant:<6}: {run.seconds:6.2f} s  drain {run.drain * 1000:4.0f} ms  "
            f"machine {run.machine_busy:4.0%} busy  cpu of rabbitmq {_us(run.broker_cpu, run.jobs)}, "
            f"postgres backends {_us(run.database_cpu, run.jobs)}, producer {_us(run.producer_cpu, run.jobs)}, "
            f"worker {_us(run.worker_cpu, run.jobs)}"
        )
    for paced in (latency, reference):
        if paced is None:
            continue
        lines.append(
            f"  {paced.variant:<6}: {paced.jobs} jobs paced at {paced.target_rate:.0f} jobs/s "
            f"(achieved {paced.achieved_rate:.0f}): latency p50 {paced.p50 * 1000:.1f} ms  "
            f"p99 {paced.p99 * 1000:.1f} ms  max {paced.max * 1000:.1f} ms"
        )
    lines.append("")
    lines.append(f"jobs: {relay.jobs}")
    for run in (relay, janus, *outcome.others):
        lines.append(f"{run.variant:<8}: {run.rate:4.0f} jobs/s  cpu {_us(run.coordinator_cpu, run.jobs)}")
    lines.append(f"ratio janus/relay: {janus.rate / relay.rate:.2f}")
    for other in outcome.others:
        lines.append(
            f"ratio {other.variant}/relay: {other.rate / relay.rate:.2f}, "
            f"cpu per job {other.coordinator_cpu / relay.coordinator_cpu:.2f}"
        )
    if latency is not None:
        lines.append(
            f"janus latency at {latency.target_rate:.0f} jobs/s (half of top): "
            f"p50 {latency.p50 * 1000:.1f} ms  p99 {latency.p99 * 1000:.1f} ms"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Janus against a bare relay, end to end.")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per throughput run (default 20000)")
    parser.add_argument(
        "--amqp-base", default="amqp://guest:guest@127.0.0.1:5672", help="AMQP URL without vhost"
    )
    parser.add_argument(
        "--pg-base", default="postgresql://postgres@127.0.0.1:5432", help="PostgreSQL URL without database"
    )
    parser.add_argument("--rabbitmqctl", default="rabbitmqctl")
    parser.add_argument(
        "--queue-types", action="store_true", help="Janus with quorum queues against classic, same run"
    )
    parser.add_argument("--rounds", type=int, default=3, help="with --queue-types: rounds (default 3)")
    parser.add_argument("--runs", type=int, default=1, help="whole runs, then their medians (default 1)")
    parser.add_argument(
        "--outcomes-off", action="store_true", help="also Janus with `outcomes = []` (no outcome publishes)"
    )
    parser.add_argument(
        "--baseline-tree", type=Path, help="also Janus run from this source tree (e.g. main, exported)"
    )
    parser.add_argument("--no-latency", action="store_true", help="skip the paced phase")
    args = parser.parse_args(argv)
    if args.jobs < 200:
        parser.error("--jobs must be at least 200")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    services = Services(amqp_base=args.amqp_base, pg_base=args.pg_base, rabbitmqctl=(args.rabbitmqctl,))
    if args.queue_types:
        from benchmarks._queue_types import main as queue_types

        return queue_types(services, args.jobs, args.rounds)
    variants = []
    if args.outcomes_off:
        variants.append(Variant(name="janus-no-outcomes", outcomes=False))
    if args.baseline_tree is not None:
        variants.append(Variant(name="janus-baseline", tree=args.baseline_tree.resolve()))
    outcomes = []
    for number in range(1, args.runs + 1):
        try:
            outcome = uvloop.run(
                run(services, args.jobs, variants, paced=not args.no_latency, rotation=number - 1)
            )
        except (BenchmarkError, JanusError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        if args.runs > 1:
            names = ["relay", "janus", *(variant.name for variant in variants)]
            first = names[(number - 1) % len(names)]
            print(f"-- run {number} of {args.runs} (the first measured: {first}, then in turn)")
        print(report(outcome), flush=True)
        outcomes.append(outcome)
    if args.runs > 1:
        print(medians(outcomes))
    return 0


def medians(outcomes: Sequence[Outcome]) -> str:
    """The medians over the runs; each ratio is taken within its run (relay and Janus back to back)."""
    median = statistics.median
    jobs = outcomes[0].janus.jobs
    ratio = median([o.janus.rate / o.relay.rate for o in outcomes])
    cpu = median([o.janus.coordinator_cpu / o.relay.coordinator_cpu for o in outcomes])
    lines = [
        f"medians over {len(outcomes)} runs:",
        f"  throughput ratio janus/relay {ratio:.2f}, CPU per job ratio janus/relay {cpu:.2f}",
        f"  relay cpu {_us(median([o.relay.coordinator_cpu for o in outcomes]), jobs)}, "
        f"janus cpu {_us(median([o.janus.coordinator_cpu for o in outcomes]), jobs)}, "
        f"janus's postgres backends {_us(median([o.janus.database_cpu for o in outcomes]), jobs)}",
    ]
    for index, other in enumerate(outcomes[0].others):
        runs = [(o.others[index], o.relay) for o in outcomes]
        lines.append(
            f"  {other.variant}/relay: throughput {median([r.rate / b.rate for r, b in runs]):.2f}, "
            f"CPU per job {median([r.coordinator_cpu / b.coordinator_cpu for r, b in runs]):.2f}; "
            f"cpu {_us(median([r.coordinator_cpu for r, _ in runs]), jobs)}, "
            f"postgres backends {_us(median([r.database_cpu for r, _ in runs]), jobs)}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
