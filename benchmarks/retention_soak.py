"""A soak with a shortened retention: does the database stay bounded, and does Janus stay as fast?

A real `janus run` (one dependency, at most --concurrency held; every finished job
kept --retention seconds, pruning every second), one SDK worker and one producer publishing
--rate jobs/s for --seconds: the retention passes many times. Every few seconds we sample janus.jobs (rows,
on-disk bytes with indexes and TOAST), the admission log, and the jobs finished in the last
sample interval (throughput). The worker reports each job's delay from publish to receipt;
the run is cut into --periods periods, and we print per period: rows and bytes (largest
sample), completions per second, the delay's p50 and p99, Janus's ticks per second and their
mean duration (from its /metrics), and the load average; then the CPU each process spent a
job. The leader must never lose its lease: one term in janus.leader_terms from start to end.

The concurrency limit must cover the rate times the round trip of a job (admission, ready
queue, worker, result, tick): on a machine whose load average is several times its cores
that round trip takes seconds, and a limit of 400 held the run to about 110 jobs/s at an
offered 300 (Little's law), the backlog grew, and the worker never saw its last job in time.
The worker's prefetch is such a limit too: the SDK worker runs at most `prefetch` jobs at once
and a job's slot is free only once the broker confirmed its result: with 50 (the SDK's
default) and confirms taking 0.3 s, as they may on a loaded machine, at most about 170 jobs/s.

    .venv/bin/python -m benchmarks.retention_soak [--rate 100] [--seconds 300] [--retention 20]

Janus's admission log (janus.admissions) is kept by its own rule (at least an hour, for the
rate windows), so within a soak shorter than that it grows; it is printed apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import socket
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import uvloop

from benchmarks.throughput import (
    DEPENDENCY,
    BenchmarkError,
    Child,
    Services,
    _percentile,
    _start_producer,
    cpu_spent,
    database_cpu_by_pid,
    janus_env,
)
from janus.errors import JanusError

SAMPLE_EVERY = 5.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Sample:
    at: float  # seconds since the first publish
    rows: int
    jobs_bytes: int
    admissions_bytes: int
    finished: int  # jobs finished since the previous sample
    ticks: float  # Janus's ticks so far (janus_tick_seconds_count), and the seconds they took
    tick_seconds: float
    load: float  # the machine's load average (1 min)


def _scrape_ticks(port: int) -> tuple[float, float]:
    """Janus's tick count and total tick time, from its /metrics (NaN while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return math.nan, math.nan
    found = dict.fromkeys(("janus_tick_seconds_count", "janus_tick_seconds_sum"), 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in found:
            found[name] = float(value)
    return found["janus_tick_seconds_count"], found["janus_tick_seconds_sum"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def sample_database(url: str, started: float, stop: asyncio.Event, port: int) -> list[Sample]:
    samples: list[Sample] = []
    connection = await asyncpg.connect(url)
    try:
        since = time.time()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)
            now = time.time()
            row = await connection.fetchrow(
                "SELECT (SELECT count(*) FROM janus.jobs) AS rows,"
                " pg_total_relation_size('janus.jobs') AS jobs_bytes,"
                " pg_total_relation_size('janus.admissions') AS admissions_bytes,"
                " (SELECT count(*) FROM janus.jobs WHERE state = 'succeeded' AND dependency = $1"
                "   AND finished_at > $2 AND finished_at <= $3) AS finished",
                DEPENDENCY,
                since,
                now,
            )
            assert row is not None
            ticks, tick_seconds = await asyncio.to_thread(_scrape_ticks, port)
            samples.append(
                Sample(
                    at=now - started,
                    rows=row["rows"],
                    jobs_bytes=row["jobs_bytes"],
                    admissions_bytes=row["admissions_bytes"],
                    finished=row["finished"],
                    ticks=ticks,
                    tick_seconds=tick_seconds,
                    load=os.getloadavg()[0],
                )
            )
            since = now
    finally:
        await connection.close()
    return samples


def janus_config(retention: float, concurrency: int) -> str:
    return f"""\
# Written by benchmarks/retention_soak.py: one unlimited dependency, a shortened retention.
[retention]
succeeded = "{retention:g}s"
dead = "{retention:g}s"
dedup_window = "{retention:g}s"
prune_every = "1s"

[dependencies.{DEPENDENCY}]
concurrency = {concurrency}  # above rate x round trip, or the limit, not Janus, sets the pace
lease_timeout = "300s"
admission_ttl = "240s"  # a ready message that outlived it would be worked twice (re-admitted)
"""


async def run(
    services: Services,
    rate: float,
    seconds: float,
    retention: float,
    periods: int,
    concurrency: int,
    prefetch: int,
) -> int:
    jobs = int(rate * seconds)
    suffix = uuid.uuid4().hex[:8]
    vhost, database = f"janus-soak-{suffix}", f"janus_soak_{suffix}"
    await services.create_vhost(vhost)
    await services.create_database(database)
    url, database_url = services.amqp_url(vhost), services.pg_url(database)
    try:
        with tempfile.TemporaryDirectory(prefix="janus-soak-") as directory:
            workdir = Path(directory)
            config = workdir / "janus.toml"
            config.write_text(janus_config(retention, concurrency), encoding="utf-8")
            port = _free_port()  # its /metrics: how many ticks, how long they took
            child = await Child.start(
                "janus",
                ["-m", "janus.cli", "run", "--config", str(config)],
                workdir,
                {**janus_env(url, database_url), "JANUS_HTTP_PORT": str(port)},
            )
            try:
                await child.wait_for_stderr("leading as", timeout=60.0)
                args = ["-m", "benchmarks.load", "worker", "--amqp-url", url, "--expect", str(jobs)]
                args += ["--dependency", DEPENDENCY, "--latencies", "--timeout", str(seconds + 120)]
                args += ["--prefetch", str(prefetch)]
                worker = await Child.start("worker", args, workdir)
                await worker.expect("ready")
                stop = asyncio.Event()
                started = time.time()
                sampling = asyncio.create_task(sample_database(database_url, started, stop, port))
                janus_cpu, database_before = child.cpu(), database_cpu_by_pid(database)
                producer = await _start_producer(url, jobs, "soak", workdir, rate=rate)
                produced, worked = await asyncio.gather(
                    producer.report(timeout=seconds + 120), worker.report(timeout=seconds + 120)
                )
                cpu = {
                    "janus": child.cpu() - janus_cpu,
                    "PostgreSQL": cpu_spent(database_before, database_cpu_by_pid(database)),
                    "worker": worked["cpu"],
                    "producer": produced["cpu"],
                }
                stop.set()
                samples = await sampling
                terms = await _terms(database_url)
                code = await child.stop()
            finally:
                child.kill()
    finally:
        await services.delete_vhost(vhost)
        await services.drop_database(database)
    if worked["outcomes"] != {"success": jobs} or worked["timed_out"]:
        raise BenchmarkError(
            f"the worker saw {worked['outcomes']} of {jobs} jobs (timed out: {worked['timed_out']})"
        )
    print(report(samples, worked["latencies"], produced, rate, seconds, retention, periods, terms, code))
    print(
        "  CPU a job (ms): "
        + ", ".join(f"{name} {spent / jobs * 1000:.2f}" for name, spent in cpu.items())
        + f"; {len(samples)} samples, sampled load average {min(x.load for x in samples):.1f}"
        f"-{max(x.load for x in samples):.1f} on {os.cpu_count()} cores"
    )
    return 0 if terms == 1 and code == 0 else 1


async def _terms(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM janus.leader_terms"))
    finally:
        await connection.close()


def report(
    samples: list[Sample],
    latencies: list[float],
    produced: dict[str, float],
    rate: float,
    seconds: float,
    retention: float,
    periods: int,
    terms: int,
    code: int,
) -> str:
    span = produced["last_publish"] - produced["first_publish"]
    lines = [
        f"{len(latencies)} jobs at {rate:g}/s target ({(len(latencies) - 1) / span:.0f}/s achieved) for "
        f"{seconds:g} s, retention {retention:g} s (passed {seconds / retention:.0f} times), "
        f"{periods} periods:",
        "  period   janus.jobs rows  janus.jobs MiB  admissions MiB  finished/s   p50 ms   p99 ms"
        "  ticks/s  ms a tick  load",
    ]
    length = seconds / periods
    chunk = len(latencies) // periods
    firsts: tuple[float, float, float] | None = None
    previous = Sample(
        at=0.0, rows=0, jobs_bytes=0, admissions_bytes=0, finished=0, ticks=0, tick_seconds=0, load=0
    )
    for index in range(periods):
        inside = [s for s in samples if index * length < s.at <= (index + 1) * length]
        delays = sorted(latencies[index * chunk : (index + 1) * chunk])
        rows = max((s.rows for s in inside), default=0)
        jobs_mib = max((s.jobs_bytes for s in inside), default=0) / 2**20
        admissions_mib = max((s.admissions_bytes for s in inside), default=0) / 2**20
        finished = sum(s.finished for s in inside) / max(len(inside) * SAMPLE_EVERY, 1e-9)
        p50, p99 = _percentile(delays, 0.5) * 1000, _percentile(delays, 0.99) * 1000
        if firsts is None:
            firsts = (finished, p50, p99)
        last = inside[-1] if inside else previous
        ticks = last.ticks - previous.ticks
        tick_ms = (last.tick_seconds - previous.tick_seconds) / ticks * 1000 if ticks else 0.0
        load = max((s.load for s in inside), default=0.0)
        lines.append(
            f"  {index + 1:6d}   {rows:15,d}  {jobs_mib:14.1f}  {admissions_mib:14.1f}  {finished:10.0f}"
            f"  {p50:7.1f}  {p99:7.1f}  {ticks / max(last.at - previous.at, 1e-9):7.0f}  {tick_ms:9.1f}"
            f"  {load:4.1f}"
        )
        previous = last
    assert firsts is not None
    lines.append(
        f"  last period / first: finished/s {finished / firsts[0]:.2f}, p50 {p50 / firsts[1]:.2f}, "
        f"p99 {p99 / firsts[2]:.2f}"
    )
    lines.append(
        f"  leader terms: {terms} ({'the lease was never lost' if terms == 1 else 'THE LEASE CHANGED HANDS'}); "
        f"janus exited {code}"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=100.0, help="jobs per second")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--retention", type=float, default=20.0, help="seconds every finished job is kept")
    parser.add_argument("--periods", type=int, default=6)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=3000,
        help="the dependency's concurrency limit: at least the rate times the slowest round trip expected",
    )
    parser.add_argument(
        "--worker-prefetch",
        type=int,
        default=600,
        help="the worker's prefetch, which also bounds the jobs it runs and reports at once",
    )
    parser.add_argument("--amqp-base", default="amqp://guest:guest@127.0.0.1:5672")
    parser.add_argument("--pg-base", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    services = Services(amqp_base=args.amqp_base, pg_base=args.pg_base, rabbitmqctl=("rabbitmqctl",))
    try:
        return uvloop.run(
            run(
                services,
                args.rate,
                args.seconds,
                args.retention,
                args.periods,
                args.concurrency,
                args.worker_prefetch,
            )
        )
    except (BenchmarkError, JanusError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
