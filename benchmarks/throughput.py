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
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import aio_pika
import asyncpg
import psutil  # type: ignore[import-untyped]
import uvloop

from janus.broker import topology
from janus.errors import JanusError
from janus.local_services import LocalServices

ROOT = Path(__file__).resolve().parents[1]
DEPENDENCY = "bench"
LATENCY_SECONDS = 15.0  # how long the paced phase lasts, at most
PHASE_TIMEOUT = 240.0
POLL_EVERY = 0.02
STDOUT_LINE_LIMIT = 64 * 1024 * 1024  # a worker's report carries every latency on one line

JANUS_CONFIG = f"""\
# Written by benchmarks/throughput.py: one dependency, no rate limit, no concurrency limit.
[dependencies.{DEPENDENCY}]
lease_timeout = "60s"
admission_ttl = "30s"
"""


class BenchmarkError(Exception):
    pass


# -- processes -------------------------------------------------------------------


class Child:
    """A child process: stdout read line by line, stderr kept in a file for post-mortems."""

    started: ClassVar[set[Child]] = set()  # every child of this run, so none outlives a failure

    def __init__(self, name: str, process: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.name = name
        self.process = process
        self.stderr_path = stderr_path
        self.ps = psutil.Process(process.pid)
        Child.started.add(self)

    @classmethod
    async def start(
        cls, name: str, args: Sequence[str], workdir: Path, env: dict[str, str] | None = None
    ) -> Child:
        stderr_path = workdir / f"{name}.stderr"
        with stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                cwd=ROOT,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                limit=STDOUT_LINE_LIMIT,
            )
        return cls(name, process, stderr_path)

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _failed(self, what: str) -> BenchmarkError:
        return BenchmarkError(f"{self.name}: {what}\n--- stderr of {self.name} ---\n{self.stderr_tail()}")

    async def line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        try:
            raw = await asyncio.wait_for(self.process.stdout.readline(), timeout=timeout)
        except TimeoutError:
            raise self._failed(f"no output within {timeout:g}s") from None
        if not raw:
            await self.process.wait()
            raise self._failed(f"exited ({self.process.returncode}) without the expected output")
        return raw.decode().strip()

    async def expect(self, text: str, timeout: float = 60.0) -> None:
        line = await self.line(timeout)
        if line != text:
            raise self._failed(f"expected {text!r}, got {line!r}")

    async def report(self, timeout: float = PHASE_TIMEOUT) -> dict[str, Any]:
        line = await self.line(timeout)
        try:
            report: dict[str, Any] = json.loads(line)
        except ValueError:
            raise self._failed(f"expected a JSON report, got {line[:200]!r}") from None
        await asyncio.wait_for(self.process.wait(), timeout=30.0)
        return report

    async def wait_for_stderr(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr_path.read_text(errors="replace"):
            if self.process.returncode is not None:
                raise self._failed(f"exited ({self.process.returncode}) before logging {text!r}")
            if time.monotonic() >= deadline:
                raise self._failed(f"did not log {text!r} within {timeout:g}s")
            await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 30.0) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        assert self.process.returncode is not None
        return self.process.returncode

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()

    @classmethod
    async def kill_all(cls) -> None:
        for child in cls.started:
            child.kill()
            await child.process.wait()
        cls.started.clear()


BROKER_PROCESS = "beam.smp"  # RabbitMQ's Erlang VM: shared with whatever else uses the broker
DATABASE_PROCESS = "postgres"


def janus_env(amqp_url: str, database_url: str) -> dict[str, str]:
    """The environment of a benchmarked `janus run`: URLs given, no HTTP port, INFO logs."""
    env = {
        **os.environ,
        "JANUS_AMQP_URL": amqp_url,
        "JANUS_DATABASE_URL": database_url,
        "JANUS_HTTP_PORT": "0",
        "JANUS_LOG_LEVEL": "INFO",
    }
    env.pop("JANUS_CONFIG", None)
    return env


def cpu_by_pid(name: str, cmdline_has: str | None = None) -> dict[int, float]:
    """User+system CPU seconds of every local process called `name` (and whose command line has
    `cmdline_has`: a PostgreSQL backend shows its database there)."""
    found: dict[int, float] = {}
    for process in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        times = process.info["cpu_times"]
        if process.info["name"] != name or times is None:
            continue
        if cmdline_has is not None and cmdline_has not in " ".join(process.info["cmdline"] or ()):
            continue
        found[process.pid] = float(times.user + times.system)
    return found


def database_cpu_by_pid(database: str | None) -> dict[int, float]:
    """The backends serving `database` (not PostgreSQL's shared background processes)."""
    return {} if database is None else cpu_by_pid(DATABASE_PROCESS, f" {database} ")


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two snapshots (processes that ended in between are missed); NaN if none ran here."""
    if not after:
        return math.nan
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


# -- services --------------------------------------------------------------------


# janus.local_services makes and removes the vhosts and the database of each variant.
Services = LocalServices


# -- the variants ----------------------------------------------------------------


class Coordinator(Protocol):
    """What sits between the producer and the workers: the relay or Janus."""

    child: Child
    database: str | None  # the database it writes to, if any

    async def caught_up(self, results: int, timeout: float) -> None:
        """Return once the coordinator has taken in `results` results in all."""


class RelayCoordinator:
    def __init__(self, child: Child, amqp_url: str) -> None:
        self.child = child
        self.database: str | None = None
        self._url = amqp_url

    async def caught_up(self, results: int, timeout: float) -> None:
        # The relay keeps no record: caught up when nothing waits in its queues.
        connection = await aio_pika.connect(self._url, client_properties={"connection_name": "bench-probe"})
        async with connection:
            channel = await connection.channel()
            deadline = time.monotonic() + timeout
            while True:
                waiting = 0
                for name in (
                    topology.INTAKE_QUEUE,
                    topology.ready_queue(DEPENDENCY),
                    topology.results_queue(DEPENDENCY),
                ):
                    queue = await channel.declare_queue(name, passive=True)
                    waiting += queue.declaration_result.message_count or 0
                if waiting == 0:
                    return
                if time.monotonic() >= deadline:
                    raise BenchmarkError(f"the relay left {waiting} messages in its queues")
                await asyncio.sleep(POLL_EVERY)


class JanusCoordinator:
    def __init__(self, child: Child, database_url: str, database: str) -> None:
        self.child = child
        self.database: str | None = database
        self._url = database_url

    async def caught_up(self, results: int, timeout: float) -> None:
        # Caught up when every result is committed: Janus's own definition of done.
        connection = await asyncpg.connect(self._url)
        try:
            deadline = time.monotonic() + timeout
            while True:
                done = int(
                    await connection.fetchval("SELECT count(*) FROM janus.jobs WHERE state = 'succeeded'")
                )
                if done >= results:
                    return
                if time.monotonic() >= deadline:
                    raise BenchmarkError(f"Janus recorded {done} of {results} results")
                await asyncio.sleep(POLL_EVERY)
        finally:
            await connection.close()


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
    producer = await _start_producer(amqp_url, jobs, prefix or f"{variant}-lat", workdir, rate=rate)
    produced, worked = await asyncio.gather(producer.report(), worker.report())
    _check_worker(worked, jobs)
    await coordinator.caught_up(results_before + jobs, timeout=PHASE_TIMEOUT)
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
    )


# -- the run ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    relay: Throughput
    janus: Throughput
    latency: Latency
    relay_latency: Latency  # the relay at Janus's half rate: what the broker and clients alone cost


@contextlib.asynccontextmanager
async def relay_running(
    name: str, amqp_url: str, jobs: int, workdir: Path
) -> AsyncIterator[RelayCoordinator]:
    """A relay process for one phase of `jobs` jobs; its own count is checked when it stops."""
    args = ["-m", "benchmarks.relay", "--amqp-url", amqp_url, "--dependency", DEPENDENCY, "--ttl", "30"]
    child = await Child.start(name, args, workdir)
    try:
        await child.expect("ready")
        yield RelayCoordinator(child, amqp_url)
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
) -> tuple[Throughput, Latency | None]:
    url = services.amqp_url(vhost)
    database_url = services.pg_url(database)
    config = workdir / "janus.toml"
    config.write_text(f'queue_type = "{queue_type}"\n' + JANUS_CONFIG, encoding="utf-8")
    env = janus_env(url, database_url)
    child = await Child.start("janus", ["-m", "janus.cli", "run", "--config", str(config)], workdir, env)
    try:
        await child.wait_for_stderr("leading as", timeout=60.0)
        coordinator = JanusCoordinator(child, database_url, database)
        throughput = await measure_throughput(f"janus-{queue_type}", coordinator, url, jobs, workdir)
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


async def run(services: Services, jobs: int) -> Outcome:
    tag = uuid.uuid4().hex[:8]
    relay_vhost, janus_vhost, database = (
        f"janus-bench-relay-{tag}",
        f"janus-bench-janus-{tag}",
        f"janus_bench_{tag}",
    )
    created: list[str] = []
    with tempfile.TemporaryDirectory(prefix="janus-bench-") as tmp:
        workdir = Path(tmp)
        try:
            for vhost in (relay_vhost, janus_vhost):
                await services.create_vhost(vhost)
                created.append(vhost)
            await services.create_database(database)
            relay = await run_relay(services, relay_vhost, jobs, workdir)
            janus, latency = await run_janus(services, janus_vhost, database, jobs, workdir)
            assert latency is not None
            relay_latency = await run_relay_latency(
                services, relay_vhost, latency.target_rate, latency.jobs, workdir
            )
            return Outcome(relay=relay, janus=janus, latency=latency, relay_latency=relay_latency)
        finally:
            await Child.kill_all()
            for vhost in created:
                with contextlib.suppress(JanusError):
                    await services.delete_vhost(vhost)
            with contextlib.suppress(JanusError, OSError, asyncpg.PostgresError):
                await services.drop_database(database)


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


def _us(seconds: float, jobs: int) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds / jobs * 1e6:.0f} µs/job"


def report(outcome: Outcome) -> str:
    relay, janus, latency, reference = outcome.relay, outcome.janus, outcome.latency, outcome.relay_latency
    lines = ["details (drain: after the last job ran, until its coordinator had taken in every result):"]
    for run in (relay, janus):
        lines.append(
            f"  {run.variant:<6}: {run.seconds:6.2f} s  drain {run.drain * 1000:4.0f} ms  "
            f"machine {run.machine_busy:4.0%} busy  cpu of rabbitmq {_us(run.broker_cpu, run.jobs)}, "
            f"postgres backends {_us(run.database_cpu, run.jobs)}, producer {_us(run.producer_cpu, run.jobs)}, "
            f"worker {_us(run.worker_cpu, run.jobs)}"
        )
    for paced in (latency, reference):
        lines.append(
            f"  {paced.variant:<6}: {paced.jobs} jobs paced at {paced.target_rate:.0f} jobs/s "
            f"(achieved {paced.achieved_rate:.0f}): latency p50 {paced.p50 * 1000:.1f} ms  "
            f"p99 {paced.p99 * 1000:.1f} ms  max {paced.max * 1000:.1f} ms"
        )
    lines.append("")
    lines.append(f"jobs: {relay.jobs}")
    for run in (relay, janus):
        lines.append(f"{run.variant:<8}: {run.rate:4.0f} jobs/s  cpu {_us(run.coordinator_cpu, run.jobs)}")
    lines.append(f"ratio janus/relay: {janus.rate / relay.rate:.2f}")
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
    args = parser.parse_args(argv)
    if args.jobs < 200:
        parser.error("--jobs must be at least 200")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    services = Services(amqp_base=args.amqp_base, pg_base=args.pg_base, rabbitmqctl=(args.rabbitmqctl,))
    if args.queue_types:
        try:
            runs = uvloop.run(run_queue_types(services, args.jobs, args.rounds))
        except (BenchmarkError, JanusError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        print(report_queue_types(runs))
        return 0
    outcomes = []
    for number in range(1, args.runs + 1):
        try:
            outcome = uvloop.run(run(services, args.jobs))
        except (BenchmarkError, JanusError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        if args.runs > 1:
            print(f"-- run {number} of {args.runs}")
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
    return "\n".join(
        [
            f"medians over {len(outcomes)} runs:",
            f"  throughput ratio janus/relay {ratio:.2f}, CPU per job ratio janus/relay {cpu:.2f}",
            f"  relay cpu {_us(median([o.relay.coordinator_cpu for o in outcomes]), jobs)}, "
            f"janus cpu {_us(median([o.janus.coordinator_cpu for o in outcomes]), jobs)}, "
            f"janus's postgres backends {_us(median([o.janus.database_cpu for o in outcomes]), jobs)}",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
