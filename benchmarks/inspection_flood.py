"""Does a flood of /scopes clients slow admissions or cost the leader its lease?

One `janus run` process (a fresh database and vhost, its HTTP port open) with two
dependencies: `bench`, whose admissions are measured, and `backlog`, which nobody works on
and which holds --scopes scopes of one waiting job each (the leader ranks them all for
/scopes). The producer and worker processes of benchmarks.load run `bench` jobs in three
phases of --jobs jobs each: a baseline, the same while a flooder process runs --clients
clients that loop on `GET /scopes?top=1000`, and a baseline again. Admissions per second =
jobs / (first publish to the last result at the worker); the ratio compares the flood phase
with the mean of the two baselines of the same run.

The lease is watched from outside: janus.leader is read every 20 ms, and each renewal moves
its expires_at (the database's now() + lease). The worst case is the longest time between two
renewals in a phase (Janus renews every 0.75 s; the lease lasts 3 s; a new epoch would be a
lost lease).

    .venv/bin/python -m benchmarks.inspection_flood [--jobs 3000] [--scopes 50000] [--clients 16]

The flooder is also what tests/system/test_inspection_flood.py runs:
    .venv/bin/python -m benchmarks.inspection_flood flooder --url http://127.0.0.1:PORT [--clients 16]
It prints "ready", floods until SIGTERM, then prints a JSON report (answers by status).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import uvloop

from benchmarks.throughput import (
    JANUS_CONFIG,
    PHASE_TIMEOUT,
    BenchmarkError,
    Child,
    JanusCoordinator,
    Services,
    _check_worker,
    _start_producer,
    _start_worker,
    janus_env,
)
from janus.client.producer import Producer
from janus.errors import JanusError

BACKLOG = "backlog"  # the dependency nobody works on: its scopes only wait
FLOOD_QUERY = "/scopes?top=1000"
LEASE_POLL = 0.02


# -- the flooder -----------------------------------------------------------------


async def flood(url: str, clients: int, stop: asyncio.Event) -> dict[str, Any]:
    """`clients` loops on /scopes until `stop`; answers counted by status."""
    statuses: Counter[str] = Counter()
    slowest = 0.0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal slowest
        while not stop.is_set():
            started = time.monotonic()
            try:
                async with session.get(url + FLOOD_QUERY) as response:
                    await response.read()
                    statuses[str(response.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
                await asyncio.sleep(0.01)  # a refused connection must not spin
            slowest = max(slowest, time.monotonic() - started)

    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        print("ready", flush=True)
        started = time.time()
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return {
        "statuses": dict(statuses),
        "requests": sum(statuses.values()),
        "seconds": time.time() - started,
        "slowest": slowest,
    }


async def flooder(url: str, clients: int) -> dict[str, Any]:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    return await flood(url, clients, stop)


# -- the lease, seen from the database ---------------------------------------------


@dataclass
class LeaseWatch:
    """Every renewal the database records: (when this watcher saw it, epoch, expires_at)."""

    seen: list[tuple[float, int, float]] = field(default_factory=list)

    async def watch(self, database_url: str, stop: asyncio.Event) -> None:
        connection = await asyncpg.connect(database_url)
        try:
            while not stop.is_set():
                row = await connection.fetchrow(
                    "SELECT epoch, extract(epoch FROM expires_at)::float8 AS expires FROM janus.leader"
                )
                if row is not None and (not self.seen or self.seen[-1][1:] != (row[0], row[1])):
                    self.seen.append((time.time(), row[0], row[1]))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), LEASE_POLL)
        finally:
            await connection.close()

    def between(self, start: float, end: float) -> tuple[float, set[int]]:
        """The longest time between two renewals in [start, end] (database clock), and the epochs."""
        renewals = [(epoch, expires) for seen, epoch, expires in self.seen if start <= seen <= end]
        gaps = [b[1] - a[1] for a, b in itertools.pairwise(renewals) if a[0] == b[0]]
        return max(gaps, default=float("nan")), {epoch for epoch, _ in renewals}


# -- phases ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Phase:
    name: str
    jobs: int
    seconds: float
    started: float
    ended: float
    janus_cpu: float  # seconds of CPU of the janus process over the phase
    flood: dict[str, Any] | None = None

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


async def run_phase(
    name: str,
    coordinator: JanusCoordinator,
    url: str,
    http: str,
    jobs: int,
    workdir: Path,
    results_before: int,
    clients: int = 0,
) -> Phase:
    worker = await _start_worker(url, jobs, workdir)
    flooding: Child | None = None
    if clients:
        args = ["-m", "benchmarks.inspection_flood", "flooder", "--url", http, "--clients", str(clients)]
        flooding = await Child.start("flooder", args, workdir)
        await flooding.expect("ready")
    started, cpu = time.time(), coordinator.child.cpu()
    producer = await _start_producer(url, jobs, f"{name}-tp", workdir)
    produced, worked = await asyncio.gather(producer.report(), worker.report())
    _check_worker(worked, jobs)
    report = None
    if flooding is not None:
        flooding.process.send_signal(signal.SIGTERM)
        report = await flooding.report()
    await coordinator.caught_up(results_before + jobs, timeout=PHASE_TIMEOUT)
    return Phase(
        name=name,
        jobs=jobs,
        seconds=worked["done_at"] - produced["first_publish"],
        started=started,
        ended=time.time(),
        janus_cpu=coordinator.child.cpu() - cpu,
        flood=report,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def backlog_scopes(http: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{http}/scopes?dependency={BACKLOG}&top=1") as response,
    ):
        if response.status != 200:
            return -1
        body = await response.json()
    return int(body["dependencies"][0]["eligible_scopes"])


async def preload(url: str, http: str, scopes: int) -> float:
    """`scopes` backlog jobs, one per scope; seconds until Janus counted them all."""
    started = time.monotonic()
    async with await Producer.connect(url, name="bench-preload") as producer:
        await producer.submit_many((f"b-{i}", BACKLOG, None, f"tenant-{i}") for i in range(scopes))
    while await backlog_scopes(http) < scopes:  # polled: /scopes is the leader's only account
        if time.monotonic() - started > PHASE_TIMEOUT:
            raise BenchmarkError(f"Janus did not take the {scopes} backlog jobs in time")
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def run(services: Services, jobs: int, scopes: int, clients: int) -> tuple[list[Phase], LeaseWatch]:
    with tempfile.TemporaryDirectory(prefix="janus-inspect-") as tmp:
        workdir = Path(tmp)
        watch, stop = LeaseWatch(), asyncio.Event()
        watcher: asyncio.Task[None] | None = None
        async with services.scratch("janus_bench_inspect") as scratch:
            try:
                url, database_url, database = scratch.amqp_url, scratch.database_url, scratch.name
                config = workdir / "janus.toml"
                config.write_text(JANUS_CONFIG + f'\n[dependencies.{BACKLOG}]\nlease_timeout = "60s"\n')
                port = free_port()
                env = janus_env(url, database_url) | {"JANUS_HTTP_PORT": str(port)}
                janus = await Child.start(
                    "janus", ["-m", "janus.cli", "run", "--config", str(config)], workdir, env
                )
                await janus.wait_for_stderr("admitting as", timeout=60.0)  # its topology declared
                http = f"http://127.0.0.1:{port}"
                print(
                    f"preloaded {scopes} backlog scopes in {await preload(url, http, scopes):.1f} s",
                    flush=True,
                )
                watcher = asyncio.create_task(watch.watch(database_url, stop))
                coordinator = JanusCoordinator(janus, database_url, database)
                phases = []
                for index, (name, flooding) in enumerate(
                    [("baseline", 0), ("flood", clients), ("baseline-again", 0)]
                ):
                    phases.append(
                        await run_phase(name, coordinator, url, http, jobs, workdir, index * jobs, flooding)
                    )
                stop.set()
                await watcher
                code = await janus.stop()
                if code != 0:
                    raise BenchmarkError(f"janus exited {code} on SIGTERM\n{janus.stderr_tail()}")
                return phases, watch
            finally:
                stop.set()
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher
                await Child.kill_all()


def report(phases: list[Phase], watch: LeaseWatch) -> str:
    lines = []
    epochs: set[int] = set()
    for phase in phases:
        worst, seen = watch.between(phase.started, phase.ended)
        epochs |= seen
        line = (
            f"{phase.name:<15}: {phase.jobs} jobs in {phase.seconds:5.2f} s = {phase.rate:5.0f} admissions/s "
            f"at the worker; janus {phase.janus_cpu / (phase.ended - phase.started):.2f} core; "
            f"longest time between lease renewals {worst:.2f} s"
        )
        if phase.flood is not None:
            flood = phase.flood
            line += (
                f"\n{'':17}flood: {flood['requests']} requests in {flood['seconds']:.1f} s "
                f"({flood['requests'] / flood['seconds']:.0f}/s), answers {flood['statuses']}, "
                f"slowest {flood['slowest']:.2f} s"
            )
        lines.append(line)
    baseline = (phases[0].rate + phases[2].rate) / 2
    lines.append(f"ratio flood/baseline: {phases[1].rate / baseline:.2f} admissions/s at the worker")
    lines.append(f"epochs seen: {sorted(epochs)} ({'no lease lost' if len(epochs) == 1 else 'LEASE LOST'})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Admissions per second with and without a /scopes flood.")
    roles = parser.add_subparsers(dest="role")
    flooding = roles.add_parser("flooder", help="loop on /scopes until SIGTERM, then report")
    flooding.add_argument("--url", required=True, help="Janus's HTTP address")
    flooding.add_argument("--clients", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per phase (default 3000)")
    parser.add_argument("--scopes", type=int, default=50_000, help="backlog scopes (default 50000)")
    parser.add_argument("--clients", type=int, default=16, help="flooding clients (default 16)")
    parser.add_argument(
        "--amqp-base", default="amqp://guest:guest@127.0.0.1:5672", help="AMQP URL without vhost"
    )
    parser.add_argument(
        "--pg-base", default="postgresql://postgres@127.0.0.1:5432", help="PostgreSQL URL without db"
    )
    parser.add_argument("--rabbitmqctl", default="rabbitmqctl")
    args = parser.parse_args(argv)
    if args.role == "flooder":
        print(json.dumps(uvloop.run(flooder(args.url, args.clients))), flush=True)
        return 0
    services = Services(amqp_base=args.amqp_base, pg_base=args.pg_base, rabbitmqctl=(args.rabbitmqctl,))
    try:
        phases, watch = uvloop.run(run(services, args.jobs, args.scopes, args.clients))
    except (BenchmarkError, JanusError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print(f"{args.scopes} backlog scopes; flood: {args.clients} clients on GET {FLOOD_QUERY}")
    print(report(phases, watch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
