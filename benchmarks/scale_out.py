"""Janus scaled out: the same jobs over several dependencies, led by 1 process, then by N.

For each process count, on a vhost and a database of its own: N `janus run` processes in member
mode (`[scale_out] enabled = true`, docs/scale-out.md) with one policy of --dependencies unlimited
dependencies; the run starts once every dependency is led and the leases are balanced (loads
differ by at most one). Then one producer per dependency publishes its share of --jobs as fast as
confirms allow, and two worker processes (each handling half of the dependencies) run them. The
aggregate rate is jobs / (last result - first publish). Each Janus process's CPU over the run is
divided by the jobs of the dependencies it led: its CPU per job, which is what sizing N needs
(docs/operations.md, "Sizing N").

    .venv/bin/python -m benchmarks.scale_out [--processes 1 2] [--dependencies 4] [--jobs 8000] [--rounds 1]

On this 2-core machine every process (RabbitMQ, PostgreSQL, producers, workers, Janus) shares the
same two cores, so the aggregate gain of a second Janus process is bounded by what the others
leave: read the CPU per job per process, and the machine's busy share, with the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil  # type: ignore[import-untyped]
import uvloop

from benchmarks._processes import (
    BROKER_PROCESS,
    PHASE_TIMEOUT,
    BenchmarkError,
    Child,
    cpu_by_pid,
    cpu_spent,
    database_cpu_by_pid,
    janus_env,
)
from benchmarks.throughput import Services, _check_worker, _machine_busy
from janus.errors import JanusError

SETTLE_TIMEOUT = 60.0


def policy(dependencies: Sequence[str]) -> str:
    lines = ["# Written by benchmarks/scale_out.py: unlimited dependencies, member mode.", ""]
    lines += ["[scale_out]", "enabled = true", ""]
    for name in dependencies:
        lines += [f"[dependencies.{name}]", 'lease_timeout = "900s"', 'admission_ttl = "600s"', ""]
    return "\n".join(lines)


@dataclass(frozen=True, kw_only=True, slots=True)
class ProcessShare:
    dependencies: tuple[str, ...]
    jobs: int
    cpu: float  # user+system seconds over the run

    @property
    def cpu_per_job(self) -> float:
        return self.cpu / self.jobs if self.jobs else float("nan")


@dataclass(frozen=True, kw_only=True, slots=True)
class ScaleRun:
    processes: int
    jobs: int
    seconds: float
    shares: tuple[ProcessShare, ...]
    database_cpu: float
    broker_cpu: float
    machine_busy: float

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    @property
    def cpu_per_job(self) -> float:
        """Janus's CPU per job, all its processes together."""
        return sum(s.cpu for s in self.shares) / self.jobs


async def _leases(database_url: str) -> dict[str, str]:
    """Live dependency leases: dependency -> holder."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT dependency, holder::text AS holder FROM janus.dependency_leases WHERE expires_at > now()"
        )
    except asyncpg.UndefinedTableError:
        return {}
    finally:
        await connection.close()
    return {row["dependency"]: row["holder"] for row in rows}


async def _settled(database_url: str, dependencies: Sequence[str], janus: Sequence[Child]) -> dict[str, str]:
    """Wait until every dependency is led and N holders share them evenly, and stay so for 2 s."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    stable_since: float | None = None
    last: dict[str, str] = {}
    while True:
        for child in janus:
            if child.process.returncode is not None:
                raise BenchmarkError(
                    f"{child.name} exited ({child.process.returncode})\n{child.stderr_tail()}"
                )
        leases = await _leases(database_url)
        loads = [list(leases.values()).count(h) for h in set(leases.values())]
        balanced = (
            set(leases) == set(dependencies)
            and len(loads) == min(len(janus), len(dependencies))
            and max(loads) - min(loads) <= 1
        )
        now = time.monotonic()
        if balanced and leases == last:
            stable_since = stable_since if stable_since is not None else now
            if now - stable_since >= 2.0:
                return leases
        else:
            stable_since = None
        last = leases
        if now >= deadline:
            tails = "\n".join(f"--- {c.name}\n{c.stderr_tail()}" for c in janus)
            raise BenchmarkError(f"the leases did not settle within {SETTLE_TIMEOUT:g}s: {leases}\n{tails}")
        await asyncio.sleep(0.2)


def _member_of(child: Child) -> str:
    """The process's identity, which is its member id: it logs "starting as <uuid>" first."""
    match = re.search(r"starting as ([0-9a-f-]{36})", child.stderr_path.read_text(errors="replace"))
    if match is None:
        raise BenchmarkError(f"{child.name}: no identity in its log\n{child.stderr_tail()}")
    return match.group(1)


async def run_one(services: Services, processes: int, dependencies: Sequence[str], jobs: int) -> ScaleRun:
    tag = uuid.uuid4().hex[:8]
    vhost, database = f"janus-bench-scale-{tag}", f"janus_bench_scale_{tag}"
    per_dependency = jobs // len(dependencies)
    with tempfile.TemporaryDirectory(prefix="janus-bench-scale-") as tmp:
        workdir = Path(tmp)
        created_vhost = False
        try:
            await services.create_vhost(vhost)
            created_vhost = True
            await services.create_database(database)
            url, database_url = services.amqp_url(vhost), services.pg_url(database)
            config = workdir / "janus.toml"
            config.write_text(policy(dependencies), encoding="utf-8")
            env = janus_env(url, database_url)
            janus = [
                await Child.start(
                    f"janus-{i}", ["-m", "janus.cli", "run", "--config", str(config)], workdir, env
                )
                for i in range(processes)
            ]
            leases = await _settled(database_url, dependencies, janus)
            holders = {_member_of(child): child for child in janus}
            halves = [list(dependencies[0::2]), list(dependencies[1::2])]
            workers = []
            for index, half in enumerate(h for h in halves if h):
                args = ["-m", "benchmarks.load", "worker", "--amqp-url", url]
                args += ["--expect", str(per_dependency * len(half)), "--timeout", str(PHASE_TIMEOUT)]
                for name in half:
                    args += ["--dependency", name]
                worker = await Child.start(f"worker-{index}", args, workdir)
                await worker.expect("ready")
                workers.append((worker, len(half)))
            cpu_before = {child.name: child.cpu() for child in janus}
            machine_before = psutil.cpu_times()
            broker_before, database_before = cpu_by_pid(BROKER_PROCESS), database_cpu_by_pid(database)
            producers = []
            for name in dependencies:
                args = ["-m", "benchmarks.load", "producer", "--amqp-url", url, "--jobs", str(per_dependency)]
                args += ["--prefix", f"{name}-{tag}", "--dependency", name, "--rate", "0"]
                producers.append(await Child.start(f"producer-{name}", args, workdir))
            produced = await asyncio.gather(*(p.report() for p in producers))
            worked = await asyncio.gather(*(w.report() for w, _ in workers))
            for (_, count), report in zip(workers, worked, strict=True):
                _check_worker(report, per_dependency * count)
            cpu_after = {child.name: child.cpu() for child in janus}
            machine_after = psutil.cpu_times()
            broker_after, database_after = cpu_by_pid(BROKER_PROCESS), database_cpu_by_pid(database)
            if await _leases(database_url) != leases:
                raise BenchmarkError(
                    "a dependency moved during the run: the figures would mix two placements"
                )
            shares = []
            for holder, child in holders.items():
                led = tuple(sorted(d for d, h in leases.items() if h == holder))
                shares.append(
                    ProcessShare(
                        dependencies=led,
                        jobs=per_dependency * len(led),
                        cpu=cpu_after[child.name] - cpu_before[child.name],
                    )
                )
            for child in janus:
                code = await child.stop()
                if code != 0:
                    raise BenchmarkError(f"{child.name} exited {code} on SIGTERM\n{child.stderr_tail()}")
            first = min(p["first_publish"] for p in produced)
            last = max(w["done_at"] for w in worked)
            return ScaleRun(
                processes=processes,
                jobs=per_dependency * len(dependencies),
                seconds=last - first,
                shares=tuple(shares),
                database_cpu=cpu_spent(database_before, database_after),
                broker_cpu=cpu_spent(broker_before, broker_after),
                machine_busy=_machine_busy(machine_before, machine_after),
            )
        finally:
            await Child.kill_all()
            if created_vhost:
                with contextlib.suppress(JanusError):
                    await services.delete_vhost(vhost)
            with contextlib.suppress(JanusError, OSError, asyncpg.PostgresError):
                await services.drop_database(database)


def report(runs: Sequence[ScaleRun]) -> str:
    base = [r for r in runs if r.processes == min(x.processes for x in runs)]
    base_rate = statistics.median([r.rate for r in base])
    lines = [
        f"{'processes':>9} {'jobs/s':>8} {'x 1st':>6} {'janus us/job':>12} {'pg us/job':>9} "
        f"{'busy':>5}  per process: dependencies, us/job"
    ]
    for run in runs:
        per_process = "; ".join(f"{','.join(s.dependencies)}: {s.cpu_per_job * 1e6:.0f}" for s in run.shares)
        lines.append(
            f"{run.processes:>9} {run.rate:>8.0f} {run.rate / base_rate:>6.2f} "
            f"{run.cpu_per_job * 1e6:>12.0f} {run.database_cpu / run.jobs * 1e6:>9.0f} "
            f"{run.machine_busy:>5.0%}  {per_process}"
        )
    return "\n".join(lines)


async def run_all(
    services: Services, processes: Sequence[int], dependencies: Sequence[str], jobs: int, rounds: int
) -> list[ScaleRun]:
    runs = []
    for round_number in range(rounds):
        # Alternate the order, so that a trend in the machine's load favours neither.
        order = list(processes) if round_number % 2 == 0 else list(reversed(processes))
        for count in order:
            runs.append(await run_one(services, count, dependencies, jobs))
    return sorted(runs, key=lambda r: r.processes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Janus scaled out over N processes, end to end.")
    parser.add_argument(
        "--processes", type=int, nargs="+", default=[1, 2], help="process counts (default 1 2)"
    )
    parser.add_argument("--dependencies", type=int, default=4, help="dependencies (default 4)")
    parser.add_argument("--jobs", type=int, default=8000, help="jobs per run, over all dependencies")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, alternating the order (default 1)")
    parser.add_argument("--amqp-base", default="amqp://guest:guest@127.0.0.1:5672")
    parser.add_argument("--pg-base", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--rabbitmqctl", default="rabbitmqctl")
    args = parser.parse_args(argv)
    if args.dependencies < 1 or args.jobs < 100 * args.dependencies or min(args.processes) < 1:
        parser.error("need at least one dependency, 100 jobs per dependency and one process")
    dependencies = [f"dep{i}" for i in range(args.dependencies)]
    services = Services(amqp_base=args.amqp_base, pg_base=args.pg_base, rabbitmqctl=(args.rabbitmqctl,))
    try:
        runs = uvloop.run(run_all(services, args.processes, dependencies, args.jobs, args.rounds))
    except (BenchmarkError, JanusError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print(report(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
