"""Does the tick slow down with history? The real tick statement on an empty table against one
holding many finished jobs (bulk-loaded), alternated in the same run.

Two fresh databases, migrated: "empty", and "history", into which --rows finished jobs are
bulk-loaded with generate_series (1 % dead with 5 failed attempts each, the rest succeeded,
finished over the last 23 hours: within the default retention, so a day of history at a
steady rate). Ids are random hex, as producers' UUIDs would be, so the inserts into the
job_id's index land all over a large index; with --ordered-ids, time-ordered ones, as UUIDv7 or
ULIDs are (which a B-tree keeps together; a hash index, since migration 0006, does not).
With --keep-loaded NAME, the loaded database is kept under NAME (its comment says what it
holds) and the next run with the same --rows and id order copies it instead of loading again
(a file copy, seconds instead of minutes; migrations added since are applied to the copy).
Then, --rounds times, each database in turn (the order alternating) is vacuumed and analyzed
(what autovacuum does on a default server: without it, the empty table's plans stay those of
an empty table as it grows) and runs --jobs jobs through the real `tick` statement and
LeaderSession (as benchmarks.tick_statement does: inserted admitted with their admission,
then marked succeeded, in batches of --batch); we read the PostgreSQL backend's CPU per job
and the jobs per second the statements sustain, and the blocks PostgreSQL had to read from
outside its shared buffers per job (pg_statio, per database: only this run's statements).
On a machine loaded by other work the rate of either database moves by a factor of two from
round to round, so the verdict is the median of the per-round ratios (each round runs both
databases back to back, their order alternating), with their quartiles and extremes as the
spread; the medians of each side are printed too. Also the bytes per stored job (for sizing
a database: docs/operations.md).

With --end-to-end N, then also a real `janus run` on each database in turn (alternating,
--end-to-end-rounds times each, --rounds // 2 unless given), N jobs through an SDK producer
and worker as fast as they go (benchmarks.throughput's measurement, whose ids are PREFIX-N):
jobs per second and the PostgreSQL backends' CPU per job, end to end, and their ratio.

With --private-server, all of it on a throwaway PostgreSQL cluster of its own
(benchmarks._private_postgres) instead of the machine's shared server, so that shared_buffers
can be sized as docs/operations.md says: --shared-buffers 1GB,128MB runs one phase per size
on the same loaded databases, restarting the server in between; each phase starts with the
job_id index read into the buffers (pg_prewarm) and a checkpoint, and with --explain BATCHES
benchmarks.retention_explain's breakdown of both databases there (its jobs stay, as in a real
run). Each round also prints the WAL's full-page images a job (pg_stat_wal: server-wide, so
clean only on a private server).

    .venv/bin/python -m benchmarks.retention_history [--rows 10000000] [--rounds 16] [--jobs 4000]
        [--end-to-end 5000 [--end-to-end-rounds 8]] [--ordered-ids] [--keep-loaded NAME]
        [--private-server [--shared-buffers 1GB,128MB] [--checkpoint-timeout 5min] [--max-wal-size 1GB]
         [--explain 40]]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil  # type: ignore[import-untyped]

from benchmarks._private_postgres import PrivatePostgres, private_postgres, sigterm_as_interrupt
from benchmarks.throughput import Child, JanusCoordinator, janus_env, measure_throughput
from janus.core.jobs import Admission, Job, JobState
from janus.local_services import LocalServices
from janus.store.migrate import migrate
from janus.store.session import LeaderSession

DAY = 86400.0

LOAD = """
INSERT INTO janus.jobs (job_id, dependency, scope, payload, state, attempt, failures, eligible_at,
                        admitted_at, expires_at, lease_deadline, last_error, created_at, finished_at, seq)
SELECT CASE WHEN $5 THEN 'h-' || lpad(i::text, 12, '0') ELSE md5('history' || i) END, 'bench', 'tenant-' || (i % 100), '{"order": 12345}'::jsonb,
       CASE WHEN i % 100 = 0 THEN 'dead' ELSE 'succeeded' END,
       CASE WHEN i % 100 = 0 THEN 5 ELSE 1 END, CASE WHEN i % 100 = 0 THEN 5 ELSE 0 END,
       t, t + 0.01, t + 0.2, t + 300, CASE WHEN i % 100 = 0 THEN 'RuntimeError: upstream said 503' END,
       t, t + 0.05, i
  FROM (SELECT i, $1::float8 - 23 * 3600 + 23 * 3600 * i / $2::float8 AS t
          FROM generate_series($3::bigint, $4::bigint) AS i) AS s
"""
LOAD_ERRORS = """
INSERT INTO janus.attempt_errors (job_id, attempt, failed_at, error)
SELECT job_id, a, finished_at, 'RuntimeError: upstream said 503'
  FROM janus.jobs, generate_series(1, 5) AS a WHERE state = 'dead'
"""
CHUNK = 1_000_000
# The lease for a day, in a new term: after every earlier one (an earlier phase's `janus run`
# recorded its terms; retention_explain resets the lease row).
TAKE_LEAD = """
INSERT INTO janus.leader AS l
VALUES (true, $1, (SELECT coalesce(max(epoch), 0) + 1 FROM janus.leader_terms), now() + interval '1 day')
    ON CONFLICT (singleton) DO UPDATE
   SET holder = excluded.holder, epoch = greatest(l.epoch + 1, excluded.epoch), expires_at = excluded.expires_at
RETURNING epoch
"""
BLOCKS_READ = """
SELECT sum(coalesce(heap_blks_read, 0) + coalesce(idx_blks_read, 0) + coalesce(toast_blks_read, 0))
  FROM pg_statio_user_tables WHERE schemaname = 'janus'
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class Round:
    cpu_per_job: float  # seconds of the backend's CPU
    jobs_per_second: float
    reads_per_job: float  # blocks read from outside shared buffers (heap and indexes of janus.*)
    fpi_per_job: float  # full-page images written to the WAL, server-wide (pg_stat_wal)


def _admitted(job_id: str, now: float) -> tuple[Job, str]:
    job = Job(
        job_id=job_id,
        dependency="bench",
        scope="tenant-1",
        payload={"order": 12345},
        state=JobState.ADMITTED,
        attempt=1,
        eligible_at=now,
        admitted_at=now,
        expires_at=now + 0.2,
        lease_deadline=now + 300,
    )
    return job, '{"order": 12345}'


def _succeeded(job_id: str, now: float) -> Job:
    return Job(
        job_id=job_id,
        dependency="bench",
        scope="tenant-1",
        payload=None,
        state=JobState.SUCCEEDED,
        attempt=1,
        eligible_at=now,
        finished_at=now,
    )


class Bench:
    def __init__(
        self, name: str, connection: asyncpg.Connection, holder: uuid.UUID, ordered: bool, epoch: int
    ) -> None:
        self.name = name
        self.ordered = ordered
        self.connection = connection
        self.session = LeaderSession(connection, holder, epoch)
        self.backend: psutil.Process | None = None
        self.rounds: list[Round] = []

    async def start(self) -> None:
        self.backend = psutil.Process(await self.connection.fetchval("SELECT pg_backend_pid()"))

    async def vacuum(self) -> None:
        for table in ("jobs", "admissions"):
            await self.connection.execute(f"VACUUM (ANALYZE) janus.{table}", timeout=None)

    async def blocks_read(self) -> int:
        # This backend's counters are flushed to the shared statistics at most once a second.
        await self.connection.execute("SELECT pg_stat_force_next_flush()")
        await asyncio.sleep(0)
        value = await self.connection.fetchval(BLOCKS_READ)
        return int(value or 0)

    async def full_page_images(self) -> int:
        # Server-wide: every database's WAL; clean on a private server (--private-server).
        await self.connection.execute("SELECT pg_stat_force_next_flush()")
        await asyncio.sleep(0)
        return int(await self.connection.fetchval("SELECT wal_fpi FROM pg_stat_wal"))

    async def run(self, jobs: int, batch: int) -> None:
        assert self.backend is not None
        reads_before = await self.blocks_read()
        fpi_before = await self.full_page_images()
        cpu_before = sum(self.backend.cpu_times()[:2])
        started = time.perf_counter()
        for _ in range(jobs // batch):
            now = time.time()
            if self.ordered:  # time-ordered, as UUIDv7 or ULIDs are: inserts land on the index's edge
                ids = [f"n-{time.time_ns():020d}-{i:03d}" for i in range(batch)]
            else:
                ids = [uuid.uuid4().hex for _ in range(batch)]
            admitted = [_admitted(i, now) for i in ids]
            await self.session.write_tick(now, admitted, [], [Admission.of(job) for job, _ in admitted])
            await self.session.write_tick(now, [], [_succeeded(i, now) for i in ids], [])
        done = jobs // batch * batch
        cpu = sum(self.backend.cpu_times()[:2]) - cpu_before
        elapsed = time.perf_counter() - started
        reads = await self.blocks_read() - reads_before
        fpi = await self.full_page_images() - fpi_before
        self.rounds.append(
            Round(
                cpu_per_job=cpu / done,
                jobs_per_second=done / elapsed,
                reads_per_job=reads / done,
                fpi_per_job=fpi / done,
            )
        )


async def load(url: str, rows: int, ordered: bool) -> float:
    """Bulk-load `rows` finished jobs; returns the seconds it took."""
    started = time.perf_counter()
    connection = await asyncpg.connect(url)
    try:
        now = time.time()
        for first in range(1, rows + 1, CHUNK):
            last = min(first + CHUNK - 1, rows)
            await connection.execute(LOAD, now, float(rows), first, last, ordered, timeout=None)
            print(f"  loaded {last:,} of {rows:,} ({time.perf_counter() - started:.0f} s)", flush=True)
        await connection.execute(LOAD_ERRORS, timeout=None)
        await connection.execute("VACUUM (ANALYZE) janus.jobs", timeout=None)
        await connection.execute("VACUUM (ANALYZE) janus.attempt_errors", timeout=None)
    finally:
        await connection.close()
    return time.perf_counter() - started


async def sizes(url: str) -> tuple[int, int, int]:
    connection = await asyncpg.connect(url)
    try:
        jobs = int(await connection.fetchval("SELECT count(*) FROM janus.jobs"))
        jobs_bytes = int(await connection.fetchval("SELECT pg_total_relation_size('janus.jobs')"))
        errors_bytes = int(await connection.fetchval("SELECT pg_total_relation_size('janus.attempt_errors')"))
    finally:
        await connection.close()
    return jobs, jobs_bytes, errors_bytes


JANUS_CONFIG = """\
# Written by benchmarks/retention_history.py: one dependency, no limit, default retention.
[dependencies.bench]
lease_timeout = "600s"
admission_ttl = "300s"  # the worker takes a whole run's jobs from one queue, on a busy machine
"""


class SinceCoordinator(JanusCoordinator):
    """Caught up when every result of this run is committed: counted by finished_at through the
    succeeded jobs' index, not by counting millions of rows."""

    def __init__(self, child: Child, database_url: str, database: str) -> None:
        super().__init__(child, database_url, database)
        self.since = time.time()

    async def caught_up(self, results: int, timeout: float) -> None:
        connection = await asyncpg.connect(self._url)
        try:
            deadline = time.monotonic() + timeout
            while True:
                done = int(
                    await connection.fetchval(
                        "SELECT count(*) FROM janus.jobs WHERE state = 'succeeded' AND dependency = 'bench'"
                        " AND finished_at > $1",
                        self.since,
                    )
                )
                if done >= results:
                    return
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"Janus recorded {done} of {results} results")
                await asyncio.sleep(0.05)
        finally:
            await connection.close()


async def end_to_end(local: LocalServices, names: dict[str, str], rounds: int, jobs: int) -> None:
    results: dict[str, list[tuple[float, float]]] = {label: [] for label in names}
    run_tag = uuid.uuid4().hex[:6]  # ids unseen by the databases: a later phase reuses them
    with tempfile.TemporaryDirectory(prefix="janus-history-") as directory:
        workdir = Path(directory)
        config = workdir / "janus.toml"
        config.write_text(JANUS_CONFIG, encoding="utf-8")
        for index in range(rounds):
            order = list(names.items()) if index % 2 == 0 else list(names.items())[::-1]
            for label, database in order:
                vhost = f"janus-history-{uuid.uuid4().hex[:8]}"
                await local.create_vhost(vhost)
                url = local.amqp_url(vhost)
                env = janus_env(url, local.pg_url(database))
                child = await Child.start(
                    "janus", ["-m", "janus.cli", "run", "--config", str(config)], workdir, env
                )
                try:
                    await child.wait_for_stderr("leading as", timeout=60.0)
                    coordinator = SinceCoordinator(child, local.pg_url(database), database)
                    measured = await measure_throughput(
                        f"{label}{index}-{run_tag}", coordinator, url, jobs, workdir
                    )
                    await child.stop()
                finally:
                    child.kill()
                    await local.delete_vhost(vhost)
                results[label].append((measured.rate, measured.database_cpu / jobs))
                print(
                    f"  end to end, round {index + 1}, {label}: {measured.rate:,.0f} jobs/s, "
                    f"{measured.database_cpu / jobs * 1e6:.0f} µs database CPU/job, "
                    f"machine {measured.machine_busy:.0%} busy",
                    flush=True,
                )
    rate = {label: statistics.median(r for r, _ in values) for label, values in results.items()}
    cpu = {label: statistics.median(c for _, c in values) for label, values in results.items()}
    print(f"janus run end to end, {rounds} rounds of {jobs} jobs each, medians:")
    for label in names:
        print(f"  {label:8s} {rate[label]:8,.0f} jobs/s, {cpu[label] * 1e6:5.0f} µs PostgreSQL CPU a job")
    print(
        f"  ratio history/empty: throughput {rate['history'] / rate['empty']:.2f}, "
        f"database CPU {cpu['history'] / cpu['empty']:.2f}"
    )


def _spread(values: list[float]) -> str:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return f"median {median:.2f} (quartiles {q1:.2f}-{q3:.2f}, extremes {min(values):.2f}-{max(values):.2f})"


async def _history_database(
    local: LocalServices, name: str, rows: int, ordered: bool, keep: str | None
) -> None:
    """Fill the fresh database `name` with `rows` finished jobs: loaded, or copied from `keep`."""
    marker = f"janus retention history {rows} {'ordered' if ordered else 'random'}"
    if keep is not None:
        exists, comment = await local.database_marker(keep)
        if exists and comment == marker:
            started = time.perf_counter()
            await local.drop_database(name)
            await _copy_database(local, keep, name)
            connection = await asyncpg.connect(local.pg_url(name))
            try:
                await migrate(connection)  # migrations added since the copy was loaded
                await connection.execute("VACUUM (ANALYZE) janus.jobs", timeout=None)
            finally:
                await connection.close()
            print(f"copied {keep} ({marker}) in {time.perf_counter() - started:.0f} s", flush=True)
            return
        if exists:
            raise SystemExit(f"{keep} exists and is not {marker!r}: drop it or name another")
    print(f"bulk-loading {rows:,} finished jobs into the history database:", flush=True)
    took = await load(local.pg_url(name), rows, ordered)
    print(f"loaded in {took:.0f} s", flush=True)
    if keep is not None:
        await _copy_database(local, name, keep)
        admin = await asyncpg.connect(local.pg_url("postgres"))
        try:
            await admin.execute(f"COMMENT ON DATABASE \"{keep}\" IS '{marker}'")
        finally:
            await admin.close()
        print(f"kept as {keep} for the next run", flush=True)


async def _copy_database(local: LocalServices, source: str, target: str) -> None:
    admin = await asyncpg.connect(local.pg_url("postgres"))
    try:  # FILE_COPY: copies the files at once instead of writing each page to the WAL
        await admin.execute(
            f'CREATE DATABASE "{target}" TEMPLATE "{source}" STRATEGY FILE_COPY', timeout=None
        )
    finally:
        await admin.close()


@dataclass(frozen=True, kw_only=True, slots=True)
class Options:
    rows: int
    rounds: int
    jobs: int
    batch: int
    end_to_end: int
    end_to_end_rounds: int
    explain: int  # batches of benchmarks.retention_explain per phase (0: none)
    ordered: bool
    keep: str | None
    private_server: bool
    phases: list[dict[str, str]]  # a private server's settings per phase; [{}] on the shared one


# While loading into a private server: room for the index, and few checkpoints (faster).
LOAD_SETTINGS = {"shared_buffers": "1GB", "max_wal_size": "8GB"}


async def run(options: Options) -> None:
    if not options.private_server:
        await measure(LocalServices(), options, None)
        return
    with private_postgres(LOAD_SETTINGS) as server:
        print(f"private PostgreSQL at {server.url} in {server.directory}", flush=True)
        await measure(LocalServices(pg_base=server.url), options, server)


async def measure(local: LocalServices, options: Options, server: PrivatePostgres | None) -> None:
    suffix = uuid.uuid4().hex[:8]
    names = {"empty": f"janus_hist_empty_{suffix}", "history": f"janus_hist_full_{suffix}"}
    for name in names.values():
        await local.create_database(name)
    try:
        for name in names.values():
            connection = await asyncpg.connect(local.pg_url(name))
            await migrate(connection)
            await connection.close()
        await _history_database(local, names["history"], options.rows, options.ordered, options.keep)
        stored, jobs_bytes, errors_bytes = await sizes(local.pg_url(names["history"]))
        print(
            f"{stored:,} jobs; janus.jobs {jobs_bytes / 2**20:,.0f} MiB "
            f"({jobs_bytes / stored:.0f} bytes a job, indexes included), attempt_errors "
            f"{errors_bytes / 2**20:,.0f} MiB ({errors_bytes / stored:.0f} bytes a job over all jobs)"
        )
        for settings in options.phases:
            if server is not None:
                server.restart(settings)
                print(f"phase: private server restarted with {server.describe()}", flush=True)
                await _prepare_phase(local, names)
                if options.explain:
                    # Imported here: retention_explain imports this module.
                    from benchmarks.retention_explain import explain

                    for name in names.values():
                        await explain(local.pg_url(name), options.explain, options.ordered)
            await phase(local, names, options)
    finally:
        for name in names.values():
            await local.drop_database(name)


async def _prepare_phase(local: LocalServices, names: dict[str, str]) -> None:
    """After a restart: the job_id index read into shared buffers (as a server that has run a
    while with room for it has it), then a checkpoint, so every phase starts alike (each index
    page's first change after it writes a full-page image)."""
    for name in names.values():
        connection = await asyncpg.connect(local.pg_url(name))
        try:
            await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            pages = await connection.fetchval("SELECT pg_prewarm('janus.jobs_job_id_unique')")
            size = await connection.fetchval("SELECT pg_relation_size('janus.jobs_job_id_unique')")
            print(f"  {name}: job_id index {size / 2**20:,.0f} MiB, {pages:,} pages prewarmed", flush=True)
            await connection.execute("CHECKPOINT", timeout=None)
        finally:
            await connection.close()


async def phase(local: LocalServices, names: dict[str, str], options: Options) -> None:
    connections: list[asyncpg.Connection] = []
    try:
        benches = []
        for label, name in names.items():
            holder = uuid.uuid4()
            connection = await asyncpg.connect(
                local.pg_url(name), server_settings={"plan_cache_mode": "force_generic_plan"}
            )
            connections.append(connection)
            epoch = await connection.fetchval(TAKE_LEAD, holder)  # after an earlier phase's janus run
            await connection.execute(
                "INSERT INTO janus.leader_terms (epoch, holder) VALUES ($1, $2)", epoch, holder
            )
            bench = Bench(label, connection, holder, options.ordered, epoch)
            await bench.start()
            await bench.run(options.jobs // 4, options.batch)  # warm-up: plans, caches
            bench.rounds.clear()
            benches.append(bench)
        for index in range(options.rounds):
            order = benches if index % 2 == 0 else benches[::-1]
            for bench in order:
                await bench.vacuum()  # as autovacuum would: fresh statistics, freed room
                await bench.run(options.jobs, options.batch)
            print(
                f"  round {index + 1}: "
                + "; ".join(
                    f"{b.name} {b.rounds[-1].cpu_per_job * 1e6:.0f} µs CPU/job, "
                    f"{b.rounds[-1].jobs_per_second:,.0f} jobs/s, {b.rounds[-1].reads_per_job:.3f} reads/job, "
                    f"{b.rounds[-1].fpi_per_job:.3f} FPI/job"
                    for b in benches
                )
                + f" (load average {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        print_summary(benches, options.rows, options.rounds, options.jobs, options.batch)
        for connection in connections:
            await connection.execute("UPDATE janus.leader SET expires_at = now()")  # for janus run
            await connection.close()
        connections.clear()
        if options.end_to_end:
            await end_to_end(local, names, options.end_to_end_rounds, options.end_to_end)
    finally:
        for connection in connections:
            await connection.close()


def print_summary(benches: list[Bench], rows: int, rounds: int, jobs: int, batch: int) -> None:
    empty, history = benches
    cpu = [statistics.median(r.cpu_per_job for r in b.rounds) for b in benches]
    rate = [statistics.median(r.jobs_per_second for r in b.rounds) for b in benches]
    reads = [statistics.median(r.reads_per_job for r in b.rounds) for b in benches]
    fpi = [statistics.median(r.fpi_per_job for r in b.rounds) for b in benches]
    print(f"tick statement, batches of {batch}, {rounds} rounds of {jobs} jobs each, medians:")
    for label, index in ((f"{'empty table:':17s}", 0), (f"{rows:,} finished:", 1)):
        print(
            f"  {label} {cpu[index] * 1e6:6.0f} µs backend CPU a job, {rate[index]:8,.0f} jobs/s, "
            f"{reads[index]:.3f} blocks read a job, {fpi[index]:.3f} WAL full-page images a job"
        )
    pairs = list(zip(empty.rounds, history.rounds, strict=True))
    cpu_ratios = [h.cpu_per_job / e.cpu_per_job for e, h in pairs]
    rate_ratios = [h.jobs_per_second / e.jobs_per_second for e, h in pairs]
    print(f"  per-round ratio history/empty, CPU a job: {_spread(cpu_ratios)}")
    print(f"  per-round ratio history/empty, jobs/s:    {_spread(rate_ratios)}")
    print(f"  per-round CPU ratios: {', '.join(f'{r:.2f}' for r in cpu_ratios)}")
    print(f"  per-round throughput ratios: {', '.join(f'{r:.2f}' for r in rate_ratios)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="finished jobs bulk-loaded")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per round and database")
    parser.add_argument("--batch", type=int, default=50, help="jobs per tick statement")
    parser.add_argument(
        "--ordered-ids", action="store_true", help="time-ordered job ids (UUIDv7-like) instead of random ones"
    )
    parser.add_argument("--end-to-end", type=int, default=0, help="jobs per janus run round (0: none)")
    parser.add_argument("--end-to-end-rounds", type=int, help="janus run rounds per database (--rounds // 2)")
    parser.add_argument(
        "--keep-loaded",
        metavar="NAME",
        help="keep the loaded history database as NAME, or copy it from there",
    )
    parser.add_argument(
        "--private-server",
        action="store_true",
        help="run on a throwaway PostgreSQL cluster of its own (initdb in a temporary directory), deleted after",
    )
    parser.add_argument(
        "--shared-buffers",
        default="128MB",
        help="with --private-server: shared_buffers, or several separated by commas, one phase each "
        "on the same loaded databases (the server restarted in between), e.g. 1GB,128MB",
    )
    parser.add_argument("--checkpoint-timeout", default="5min", help="with --private-server")
    parser.add_argument("--max-wal-size", default="1GB", help="with --private-server")
    parser.add_argument(
        "--explain",
        type=int,
        default=0,
        metavar="BATCHES",
        help="with --private-server: benchmarks.retention_explain on both databases at each phase's start",
    )
    args = parser.parse_args()
    if args.private_server and args.keep_loaded:
        parser.error("--keep-loaded keeps a database on the shared server; a private server is deleted after")
    phases = [
        {
            "shared_buffers": size.strip(),
            "checkpoint_timeout": args.checkpoint_timeout,
            "max_wal_size": args.max_wal_size,
        }
        for size in args.shared_buffers.split(",")
    ]
    options = Options(
        rows=args.rows,
        rounds=args.rounds,
        jobs=args.jobs,
        batch=args.batch,
        end_to_end=args.end_to_end,
        explain=args.explain,
        end_to_end_rounds=args.end_to_end_rounds or max(args.rounds // 2, 1),
        ordered=args.ordered_ids,
        keep=args.keep_loaded,
        private_server=args.private_server,
        phases=phases if args.private_server else [{}],
    )
    sigterm_as_interrupt()
    asyncio.run(run(options))


if __name__ == "__main__":
    main()
