"""The leader's memory with a large backlog in PostgreSQL, and that admission still flows.

For each of three runs, a fresh database (migrated) and a fresh RabbitMQ vhost:
- baseline: an empty backlog;
- small: 50,000 waiting jobs over 50 scopes, which the core holds in memory whole: the
  baseline of the flow (admissions per second), in the same run;
- backlog: --jobs waiting first attempts (default 1,000,000) over --scopes scopes
  (default 10,000), bulk-loaded straight into janus.jobs with COPY (state 'waiting',
  attempt 0, increasing seq, the scopes interleaved).
Then a real leader (`janus run`, one dependency "bench" with rate limit 100000/1s and
concurrency 1000) starts, and its RSS is sampled (psutil) every 100 ms. Reported: how
long the rebuild took (from the "leading as" log line to the "rebuilt from PostgreSQL"
one), the RSS right after the rebuild (before anything was admitted), then a worker
process (benchmarks.load worker: succeeds every job) is started, and after --warmup
seconds the admissions per second over --flow seconds (jobs admitted or succeeded in
the store, counted at both ends), and the peak RSS over the whole run. The backlog's
RSS figures are also given as a ratio of the baseline's, and the
backlog's flow as a ratio of the small backlog's.

    .venv/bin/python -m benchmarks.backlog_memory [--jobs 1000000] [--scopes 10000] [--flow 25] [--lease S]

The leader's log is counted for "stepping down" lines: an event loop blocked longer than
the leader lease loses leadership, which stops admission. BENCH_SHOW_LOG=1 prints the
tail of the leader's log after each run.

The database and the vhost are removed at the end, even on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil  # type: ignore[import-untyped]

from benchmarks._scratch import migrated_scratch
from benchmarks.throughput import janus_env
from janus.local_services import LocalServices

ROOT = Path(__file__).resolve().parents[1]
DEPENDENCY = "bench"
SAMPLE_EVERY = 0.1
CONFIG = f"""\
# Written by benchmarks/backlog_memory.py.
[dependencies.{DEPENDENCY}]
rate_limits = ["100000/1s"]
concurrency = 1000
lease_timeout = "60s"
admission_ttl = "30s"
"""
# The flow baseline: a backlog small enough to sit in memory whole (50 scopes x 1,000 jobs,
# within the core's 1,024 a scope), large enough not to run dry during the flow window.
SMALL_JOBS = 50_000
SMALL_SCOPES = 50
COLUMNS = ("job_id", "dependency", "scope", "payload", "seq", "state", "attempt", "eligible_at", "created_at")
MB = 1024 * 1024


class BenchmarkError(Exception):
    pass


@dataclass(frozen=True, kw_only=True, slots=True)
class Figures:
    label: str
    jobs: int
    load_seconds: float
    rebuild_seconds: float
    rss_rebuilt: int  # right after the rebuild, before the first admission
    rss_peak: int
    admitted: int  # over the flow window
    flow_seconds: float
    samples: int
    step_downs: int  # "stepping down" lines in the leader's log: a lost lease stops admission


def _rows(jobs: int, scopes: int, now: float) -> Iterator[tuple[object, ...]]:
    for seq in range(1, jobs + 1):
        yield (
            f"b{seq}",
            DEPENDENCY,
            f"tenant-{seq % scopes}",
            f'{{"n": {seq}}}',
            seq,
            "waiting",
            0,
            now,
            now,
        )


async def bulk_load(database_url: str, jobs: int, scopes: int) -> float:
    """COPY the backlog in; returns the seconds it took (with ANALYZE)."""
    started = time.perf_counter()
    connection = await asyncpg.connect(database_url)
    try:
        rows = _rows(jobs, scopes, time.time())
        chunk = 100_000
        for _ in range(0, jobs, chunk):
            batch = [row for _, row in zip(range(chunk), rows, strict=False)]
            await connection.copy_records_to_table(
                "jobs", schema_name="janus", records=batch, columns=COLUMNS
            )
        await connection.execute("ANALYZE janus.jobs")
    finally:
        await connection.close()
    return time.perf_counter() - started


class Leader:
    """`janus run` as a child; stderr lines are watched for the leadership and rebuild lines."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.seen: dict[str, float] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            for marker in ("leading as", "rebuilt from PostgreSQL"):
                if marker in line and marker not in self.seen:
                    self.seen[marker] = time.perf_counter()

    async def wait_for(self, marker: str, timeout: float) -> float:
        deadline = time.perf_counter() + timeout
        while marker not in self.seen:
            if self.process.returncode is not None:
                raise BenchmarkError(
                    f"janus exited {self.process.returncode}:\n" + "\n".join(self.lines[-30:])
                )
            if time.perf_counter() > deadline:
                raise BenchmarkError(f"no {marker!r} within {timeout:g}s:\n" + "\n".join(self.lines[-30:]))
            await asyncio.sleep(0.05)
        return self.seen[marker]

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30.0)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._reader


class Sampler:
    """The RSS of one process every SAMPLE_EVERY seconds, in a task."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[int] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            while True:
                self.samples.append(self.process.memory_info().rss)
                await asyncio.sleep(SAMPLE_EVERY)

    def now(self) -> int:
        return int(self.process.memory_info().rss)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _admitted(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM janus.jobs WHERE state IN ('admitted', 'succeeded') OR attempt > 0"
        )
    finally:
        await connection.close()
    return int(count)


async def run_one(
    local: LocalServices,
    label: str,
    jobs: int,
    scopes: int,
    warmup: float,
    flow: float,
    workdir: Path,
    lease: float | None,
) -> Figures:
    async with migrated_scratch(local, f"janus_backlogbench_{label}") as (database_url, amqp_url):
        load_seconds = await bulk_load(database_url, jobs, scopes) if jobs else 0.0
        config = workdir / "janus.toml"
        config.write_text(CONFIG, encoding="utf-8")
        env = janus_env(amqp_url, database_url)
        if lease is not None:
            env["JANUS_LEADER_LEASE"] = repr(lease)
            env["JANUS_LEADER_RENEW_EVERY"] = repr(lease / 4)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "janus.cli",
            "run",
            "--config",
            str(config),
            env=env,
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        leader = Leader(process)
        sampler = Sampler(process.pid)
        worker: asyncio.subprocess.Process | None = None
        try:
            leading = await leader.wait_for("leading as", 60.0)
            rebuilt = await leader.wait_for("rebuilt from PostgreSQL", 600.0)
            rss_rebuilt = sampler.now()
            with (workdir / f"worker-{label}.err").open("wb") as errors:
                worker = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "benchmarks.load",
                    "worker",
                    "--amqp-url",
                    amqp_url,
                    "--expect",
                    str(max(jobs, 1) * 10),
                    "--dependency",
                    DEPENDENCY,
                    "--timeout",
                    str(warmup + flow + 600),
                    cwd=ROOT,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=errors,
                )
            await asyncio.sleep(warmup)
            before, started = await _admitted(database_url), time.perf_counter()
            await asyncio.sleep(flow)
            after, ended = await _admitted(database_url), time.perf_counter()
            if process.returncode is not None:
                raise BenchmarkError(f"janus exited {process.returncode}:\n" + "\n".join(leader.lines[-30:]))
            await sampler.stop()
            if os.environ.get("BENCH_SHOW_LOG"):
                print("\n".join(leader.lines[-15:]), file=sys.stderr)
            return Figures(
                label=label,
                jobs=jobs,
                load_seconds=load_seconds,
                rebuild_seconds=rebuilt - leading,
                rss_rebuilt=rss_rebuilt,
                rss_peak=max(sampler.samples),
                admitted=after - before,
                flow_seconds=ended - started,
                samples=len(sampler.samples),
                step_downs=sum("stepping down" in line for line in leader.lines),
            )
        finally:
            await sampler.stop()
            if worker is not None and worker.returncode is None:
                worker.kill()
                await worker.wait()
            await leader.stop()


def report(figures: Figures, baseline: Figures | None) -> str:
    rate = figures.admitted / figures.flow_seconds
    lines = [
        f"{figures.label}: {figures.jobs:,} waiting jobs"
        + (f" (COPY + ANALYZE {figures.load_seconds:.1f}s)" if figures.jobs else ""),
        f"  rebuild {figures.rebuild_seconds:.2f}s",
        f"  RSS after rebuild {figures.rss_rebuilt / MB:7.1f} MB"
        + (f"  (x{figures.rss_rebuilt / baseline.rss_rebuilt:.2f} of the baseline)" if baseline else ""),
        f"  RSS peak          {figures.rss_peak / MB:7.1f} MB"
        + (f"  (x{figures.rss_peak / baseline.rss_peak:.2f} of the baseline)" if baseline else "")
        + f"  over {figures.samples} samples",
        f"  admitted {figures.admitted:,} in {figures.flow_seconds:.1f}s: {rate:,.0f}/s",
        f"  leader stepped down {figures.step_downs} times",
    ]
    return "\n".join(lines)


async def run(jobs: int, scopes: int, warmup: float, flow: float, lease: float | None) -> None:
    local = LocalServices()
    with tempfile.TemporaryDirectory(prefix="janus-backlogbench-") as tmp:
        workdir = Path(tmp)
        baseline = await run_one(local, "baseline", 0, scopes, warmup, min(flow, 5.0), workdir, lease)
        print(report(baseline, None), flush=True)
        small = await run_one(local, "small", SMALL_JOBS, SMALL_SCOPES, warmup, flow, workdir, lease)
        print(report(small, baseline), flush=True)
        backlog = await run_one(local, "backlog", jobs, scopes, warmup, flow, workdir, lease)
        print(report(backlog, baseline), flush=True)
        small_rate = small.admitted / small.flow_seconds
        backlog_rate = backlog.admitted / backlog.flow_seconds
        print(
            f"flow with {jobs:,} jobs over {scopes:,} scopes: {backlog_rate:,.0f}/s, "
            f"x{backlog_rate / small_rate:.2f} of the {SMALL_JOBS:,}-job backlog's {small_rate:,.0f}/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--scopes", type=int, default=10_000)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of flow before counting")
    parser.add_argument("--flow", type=float, default=25.0, help="seconds of flow counted")
    parser.add_argument(
        "--lease",
        type=float,
        default=None,
        help="JANUS_LEADER_LEASE seconds (renewed every lease/4); default: Janus's",
    )
    args = parser.parse_args()
    asyncio.run(run(args.jobs, args.scopes, args.warmup, args.flow, args.lease))


if __name__ == "__main__":
    main()
