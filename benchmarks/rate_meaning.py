"""What a rate limit that counts starts costs, and how long workers hold an admission before starting.

Two measurements, each against a real `janus run`, SDK worker processes and a producer
process (benchmarks.load), each variant on a vhost and database of its own:

  hold   How long protocol-following workers (the SDK Worker, default prefetch) hold an
         admission before starting it: admitted_at (Janus's decision) to started_at, split
         into admitted -> received (Janus's commit and publish, the broker) and received ->
         started (waiting in the worker for a free handler). Variants: saturated rate limits
         (admissions come in bursts of COUNT) with bursts the workers' handlers can and cannot
         take at once, a concurrency limit below the handlers, and a flood with no limit (Janus
         admits faster than the workers take: a queue). The default `admission_ttl` is chosen
         from these (docs/decisions.md).

  cost   One Janus, two dependencies with the same limit, one counting starts (the default)
         and one counting admissions, both saturated at once by the same producer and worker
         processes: the admissions per second each gets, their ratio, and the most calls that
         started in one window of T at the workers. Once per --ttl.

    .venv/bin/python -m benchmarks.rate_meaning hold [--jobs 10000]
    .venv/bin/python -m benchmarks.rate_meaning cost [--limit 200/1s] [--seconds 15] [--ttl 0.1 --ttl 0.02]

Absolute figures depend on how busy the machine is; the cost's ratio does not much.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from benchmarks.throughput import PHASE_TIMEOUT, BenchmarkError, Child, _percentile, janus_env
from janus.audit import max_in_window
from janus.config import parse_rate_limit
from janus.errors import JanusError
from janus.local_services import LocalServices

SHARES = (0.5, 0.9, 0.99, 0.999, 1.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class Variant:
    name: str
    config: str  # the dependency tables of janus.toml
    dependencies: tuple[str, ...]
    jobs: int  # per dependency
    workers: int = 2
    handler_ms: float = 0.0


@contextlib.asynccontextmanager
async def janus_running(
    services: LocalServices, config: str, workdir: Path
) -> AsyncIterator[tuple[str, str]]:
    """A vhost, a database and a `janus run` leading on them: (amqp_url, database_url)."""
    async with services.scratch("janus_bench_rate") as scratch:
        path = workdir / f"{scratch.name}.toml"
        path.write_text(config, encoding="utf-8")
        env = janus_env(scratch.amqp_url, scratch.database_url)
        child = await Child.start(
            f"janus-{scratch.name}", ["-m", "janus.cli", "run", "--config", str(path)], workdir, env
        )
        try:
            await child.wait_for_stderr("leading as", timeout=60.0)
            yield scratch.amqp_url, scratch.database_url
            await child.stop()
        finally:
            child.kill()


async def finished(database_url: str, jobs: int, timeout: float = PHASE_TIMEOUT) -> None:
    """Return once Janus has recorded `jobs` successes (workers share the stream unevenly)."""
    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while await connection.fetchval("SELECT count(*) FROM janus.jobs WHERE state = 'succeeded'") < jobs:
            if time.monotonic() >= deadline:
                raise BenchmarkError(f"Janus did not finish {jobs} jobs within {timeout:g}s")
            await asyncio.sleep(0.1)  # the job table has nothing to wait on
    finally:
        await connection.close()


async def run_variant(services: LocalServices, variant: Variant, workdir: Path) -> list[list[Any]]:
    """Every admission the workers saw: [dependency, admitted_at, received_at, started_at]."""
    async with janus_running(services, variant.config, workdir) as (url, database_url):
        total = variant.jobs * len(variant.dependencies)
        workers = []
        for index in range(variant.workers):
            # Each runs until told to stop: the broker shares the jobs out unevenly.
            args = [
                "-m",
                "benchmarks.load",
                "worker",
                "--amqp-url",
                url,
                "--expect",
                str(total + 1),
                "--holds",
            ]
            args += ["--timeout", str(PHASE_TIMEOUT), "--handler-ms", repr(variant.handler_ms)]
            for dependency in variant.dependencies:
                args += ["--dependency", dependency]
            worker = await Child.start(f"worker-{index}-{uuid.uuid4().hex[:4]}", args, workdir)
            await worker.expect("ready")
            workers.append(worker)
        producers = []
        for dependency in variant.dependencies:
            args = ["-m", "benchmarks.load", "producer", "--amqp-url", url, "--jobs", str(variant.jobs)]
            args += ["--prefix", f"{variant.name}-{dependency}", "--dependency", dependency]
            producers.append(await Child.start(f"producer-{dependency}", args, workdir))
        await asyncio.gather(*(child.report() for child in producers))
        await finished(database_url, total)
        for worker in workers:
            worker.process.send_signal(signal.SIGTERM)
        reports = await asyncio.gather(*(child.report() for child in workers))
    holds: list[list[Any]] = []
    for report in reports:
        if report["timed_out"]:
            raise BenchmarkError(f"{variant.name}: a worker timed out, it saw {report['outcomes']}")
        holds.extend(report["holds"])
    if sum(1 for hold in holds if hold[3] is not None) < total:
        raise BenchmarkError(f"{variant.name}: the workers started {len(holds)} admissions of {total} jobs")
    return holds


# -- hold ------------------------------------------------------------------------------


def _ms(values: Sequence[float]) -> str:
    ordered = sorted(values)
    if not ordered:
        return "n/a"
    return " / ".join(f"{_percentile(ordered, share) * 1000:.1f}" for share in SHARES)


def hold_report(name: str, holds: list[list[Any]]) -> str:
    started = [h for h in holds if h[3] is not None]
    expired = len(holds) - len(started)
    return "\n".join(
        [
            f"{name}: {len(holds)} admissions, {expired} expired unstarted; ms at p50 / p90 / p99 / p99.9 / max:",
            f"  admitted -> started   {_ms([s - a for _, a, _, s in started])}",
            f"  admitted -> received  {_ms([r - a for _, a, r, _ in holds])}",
            f"  received -> started   {_ms([s - r for _, _, r, s in started])}",
        ]
    )


def hold_variants(jobs: int) -> list[Variant]:
    # A TTL no hold reaches, and limits that count admissions: every hold is measured whole.
    ttl = 'admission_ttl = "30s"\nlease_timeout = "60s"\n'

    def rate(limit: str) -> str:
        return f'rate_limits = [{{ limit = "{limit}", counts = "admissions" }}]\n'

    return [
        # Workers with room for every burst: a burst of 100 meets 100 free handlers.
        Variant(
            name="rate 100/1s saturated, 20 ms calls (bursts of 100, 100 handlers)",
            config=f"[dependencies.bench]\n{rate('100/1s')}{ttl}",
            dependencies=("bench",),
            jobs=max(jobs // 10, 300),
            handler_ms=20.0,
        ),
        # No bursts: one admission as each slot frees, well within what the machine can run
        # (20 slots of 200 ms calls: 100 jobs/s). What is left is Janus's tick and the broker.
        Variant(
            name="concurrency 20, 200 ms calls (steady, 100 jobs/s)",
            config=f"[dependencies.bench]\nconcurrency = 20\n{ttl}",
            dependencies=("bench",),
            jobs=max(jobs // 5, 1000),
            handler_ms=200.0,
        ),
        # Bursts larger than the handlers: the last of a burst waits for the first to finish.
        Variant(
            name="rate 400/2s saturated, 20 ms calls (bursts of 400, 100 handlers)",
            config=f"[dependencies.bench]\n{rate('400/2s')}{ttl}",
            dependencies=("bench",),
            jobs=max(jobs // 5, 1200),
            handler_ms=20.0,
        ),
        # No limit at all: Janus admits faster than the workers take, admissions queue.
        Variant(
            name="flood, no limit", config=f"[dependencies.bench]\n{ttl}", dependencies=("bench",), jobs=jobs
        ),
    ]


async def hold(services: LocalServices, jobs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="janus-bench-") as tmp:
        try:
            for variant in hold_variants(jobs):
                before = os.getloadavg()[0]
                holds = await run_variant(services, variant, Path(tmp))
                print(hold_report(variant.name, holds), flush=True)
                print(f"  (load average {before:.1f} before, {os.getloadavg()[0]:.1f} after)", flush=True)
        finally:
            await Child.kill_all()


# -- cost ------------------------------------------------------------------------------


def cost_config(limit: str, ttl: float) -> str:
    tables = []
    for counts in ("starts", "admissions"):
        tables.append(
            f"[dependencies.{counts}]\n"
            f'rate_limits = [{{ limit = "{limit}", counts = "{counts}" }}]\n'
            f"admission_ttl = {ttl!r}\n"
            'lease_timeout = "60s"\n'
        )
    return "\n".join(tables)


def cost_report(limit: str, ttl: float, holds: list[list[Any]]) -> str:
    rate = parse_rate_limit(limit)
    lines = [f"limit {limit}, admission_ttl {ttl * 1000:g} ms, both saturated at once:"]
    rates: dict[str, float] = {}
    for dependency in ("starts", "admissions"):
        mine = [h for h in holds if h[0] == dependency]
        admitted = sorted(a for _, a, _, _ in mine)
        starts = sorted(s for _, _, _, s in mine if s is not None)
        # Over the whole run: every job waited from the start, so this is the limit's pace. Goodput
        # counts the admissions started (the rest expired before a worker could start them).
        elapsed = admitted[-1] - admitted[0]
        rates[dependency] = len(starts) / (starts[-1] - admitted[0])
        lines.append(
            f"  counts {dependency:<10}: {(len(admitted) - 1) / elapsed:6.1f} admissions/s, "
            f"{rates[dependency]:6.1f} jobs started/s ({len(admitted) - len(starts)} of {len(admitted)} "
            f"admissions expired unstarted); most starts in one window of {rate.window:g}s: "
            f"{max_in_window(starts, rate.window)} (limit {rate.count})"
        )
    ratio = rates["starts"] / rates["admissions"]
    expected = rate.window / (rate.window + ttl)
    lines.append(f"  started/s, starts / admissions: {ratio:.3f} (T / (T + ttl) = {expected:.3f})")
    return "\n".join(lines)


async def cost(services: LocalServices, limit: str, seconds: float, ttls: list[float]) -> None:
    rate = parse_rate_limit(limit)
    jobs = max(int(rate.count / rate.window * seconds), 2 * rate.count)
    with tempfile.TemporaryDirectory(prefix="janus-bench-") as tmp:
        try:
            for ttl in ttls:
                variant = Variant(
                    name="cost",
                    config=cost_config(limit, ttl),
                    dependencies=("starts", "admissions"),
                    jobs=jobs,
                )
                started = time.monotonic()
                holds = await run_variant(services, variant, Path(tmp))
                print(cost_report(limit, ttl, holds), f"({time.monotonic() - started:.0f} s)", flush=True)
        finally:
            await Child.kill_all()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-base", default="amqp://guest:guest@127.0.0.1:5672")
    parser.add_argument("--pg-base", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--rabbitmqctl", default="rabbitmqctl")
    parts = parser.add_subparsers(dest="part", required=True)
    hold_args = parts.add_parser("hold", help="how long SDK workers hold an admission before starting")
    hold_args.add_argument("--jobs", type=int, default=10_000)
    cost_args = parts.add_parser("cost", help="throughput of a limit counting starts against admissions")
    cost_args.add_argument("--limit", default="200/1s")
    cost_args.add_argument("--seconds", type=float, default=15.0, help="of saturation per dependency")
    cost_args.add_argument("--ttl", type=float, action="append", help="seconds (repeatable; default 0.1)")
    args = parser.parse_args(argv)
    services = LocalServices(amqp_base=args.amqp_base, pg_base=args.pg_base, rabbitmqctl=(args.rabbitmqctl,))
    try:
        if args.part == "hold":
            uvloop.run(hold(services, args.jobs))
        else:
            uvloop.run(cost(services, args.limit, args.seconds, args.ttl or [0.1]))
    except (BenchmarkError, JanusError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
