"""What recording the broker's confirms costs PostgreSQL per job (issue 18), against the same
ticks without it, in the same run.

Replays the real statements through the real LeaderSession, as benchmarks/tick_statement.py
does: each batch of jobs is inserted admitted with its admissions, then marked succeeded.
  baseline:     those two tick statements (what Janus wrote before the outbox);
  bookkeeping:  the finishing tick also writes each job's outcome to janus.outbox, and the
                `confirmations` statement deletes them and records the admitting tick as sent.
The service runs `confirmations` once per 0.5 s whatever the number of ticks; here it runs
once per batch, so the figure is an upper bound. The variants alternate round by round, and
the PostgreSQL backend's CPU (from /proc, psutil) is summed per variant.

    .venv/bin/python -m benchmarks.confirm_bookkeeping [--jobs 6000] [--batch 50] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import asyncpg
import psutil  # type: ignore[import-untyped]

from benchmarks.tick_statement import _admission, _admitted, _succeeded
from janus.local_services import LocalServices
from janus.service.tick import outbox_message
from janus.store.migrate import migrate
from janus.store.queries import sql
from janus.store.session import LeaderSession


async def run(jobs: int, batch: int, rounds: int) -> None:
    database = f"janus_confirmbench_{uuid.uuid4().hex[:8]}"
    local = LocalServices()
    await local.create_database(database)
    try:
        connection = await asyncpg.connect(
            local.pg_url(database), server_settings={"plan_cache_mode": "force_generic_plan"}
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
            spent = {"baseline": 0.0, "bookkeeping": 0.0}
            wall = {"baseline": 0.0, "bookkeeping": 0.0}
            done = {"baseline": 0, "bookkeeping": 0}
            per_round = max(jobs // rounds // batch, 1)
            for round_ in range(rounds * 2):
                variant = "baseline" if round_ % 2 == 0 else "bookkeeping"
                cpu_before, started = sum(backend.cpu_times()[:2]), time.perf_counter()
                for _ in range(per_round):
                    ids = [f"j{serial + i}" for i in range(batch)]
                    serial += batch
                    admitted_at = float(serial)  # one tick, one admitted_at
                    await session.write_tick(
                        admitted_at, [_admitted(i) for i in ids], [], [_admission(i) for i in ids]
                    )
                    finished = [_succeeded(i) for i in ids]
                    if variant == "baseline":
                        await session.write_tick(admitted_at + 1, [], finished, [])
                        continue
                    outcomes = [outbox_message(job) for job in finished]
                    await session.write_tick(admitted_at + 1, [], finished, [], outbox=outcomes)
                    await connection.fetchrow(
                        sql("confirmations"), [m.id for m in outcomes], [admitted_at], 1, admitted_at - 3600
                    )
                spent[variant] += sum(backend.cpu_times()[:2]) - cpu_before
                wall[variant] += time.perf_counter() - started
                done[variant] += per_round * batch
            print(
                f"{done['baseline']} jobs per variant, batches of {batch}, {rounds} alternating rounds each:"
            )
            for variant in spent:
                print(
                    f"  {variant:<11}: postgres backend cpu {spent[variant] / done[variant] * 1e6:6.1f} µs/job"
                    f"  wall {wall[variant] / done[variant] * 1e6:6.1f} µs/job"
                )
            base, book = (spent[v] / done[v] for v in ("baseline", "bookkeeping"))
            print(f"ratio bookkeeping/baseline: cpu {book / base:.2f}, +{(book - base) * 1e6:.1f} µs/job")
        finally:
            await connection.close()
    finally:
        await local.drop_database(database)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=6000, help="jobs per variant")
    parser.add_argument("--batch", type=int, default=50, help="jobs per tick")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds per variant")
    args = parser.parse_args()
    asyncio.run(run(args.jobs, args.batch, args.rounds))


if __name__ == "__main__":
    main()
