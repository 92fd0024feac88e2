"""What one admission tick costs PostgreSQL, by batch size: why Janus batches.

Replays the real `tick` statement (janus/store/sql/queries.sql) through the real
LeaderSession: each job is inserted already admitted with its admission, then
marked succeeded, in batches of 1, 5, 15, 50 and 150 jobs. Prints the CPU the
PostgreSQL backend spent per job (read from /proc through psutil), wall time per
job, and each batch size's cost relative to a batch of one, measured in the same run.

    .venv/bin/python -m benchmarks.tick_statement [--jobs 6000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import asyncpg
import psutil  # type: ignore[import-untyped]

from janus.core.jobs import Admission, Job, JobState
from janus.local_services import LocalServices
from janus.store.migrate import migrate
from janus.store.session import LeaderSession

BATCHES = (1, 5, 15, 50, 150)


def _admitted(job_id: str) -> tuple[Job, str]:
    job = Job(
        job_id=job_id,
        dependency="bench",
        scope="default",
        payload={"k": 1},
        state=JobState.ADMITTED,
        attempt=1,
        eligible_at=1.0,
        admitted_at=2.0,
        expires_at=3.0,
        lease_deadline=9.0,
    )
    return job, '{"k": 1}'


def _admission(job_id: str) -> Admission:
    return Admission.of(_admitted(job_id)[0])


def _succeeded(job_id: str) -> Job:
    return Job(
        job_id=job_id,
        dependency="bench",
        scope="default",
        payload=None,
        state=JobState.SUCCEEDED,
        attempt=1,
        eligible_at=1.0,
        finished_at=4.0,
    )


async def run(jobs_per_size: int) -> None:
    database = f"janus_tickbench_{uuid.uuid4().hex[:8]}"
    local = LocalServices()
    await local.create_database(database)
    try:
        connection = await asyncpg.connect(
            local.pg_url(database),
            server_settings={"plan_cache_mode": "force_generic_plan"},  # as the service does
        )
        try:
            await migrate(connection)
            holder = uuid.uuid4()
            await connection.execute(
                "INSERT INTO janus.leader VALUES (true, $1, 1, now() + interval '1 hour')", holder
            )
            backend = psutil.Process(await connection.fetchval("SELECT pg_backend_pid()"))
            session = LeaderSession(connection, holder, 1)
            serial = 0
            baseline: float | None = None
            print(f"{jobs_per_size} jobs per batch size; PostgreSQL backend CPU and wall time per job:")
            for size in BATCHES:
                cpu_before = sum(backend.cpu_times()[:2])
                started = time.perf_counter()
                for _ in range(max(jobs_per_size // size, 1)):
                    ids = [f"j{serial + i}" for i in range(size)]
                    serial += size
                    await session.write_tick(
                        2.0, [_admitted(i) for i in ids], [], [_admission(i) for i in ids]
                    )
                    await session.write_tick(4.0, [], [_succeeded(i) for i in ids], [])
                done = max(jobs_per_size // size, 1) * size
                cpu = (sum(backend.cpu_times()[:2]) - cpu_before) / done
                wall = (time.perf_counter() - started) / done
                baseline = baseline or cpu
                print(
                    f"  batch {size:4d}: cpu {cpu * 1e6:6.0f} µs/job  wall {wall * 1e6:6.0f} µs/job"
                    f"  ({cpu / baseline:.2f} of a batch of one)"
                )
        finally:
            await connection.close()
    finally:
        await local.drop_database(database)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=6000, help="jobs per batch size")
    asyncio.run(run(parser.parse_args().jobs))


if __name__ == "__main__":
    main()
