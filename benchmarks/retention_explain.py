"""Where the tick statement's work goes with a big history: EXPLAIN (ANALYZE, BUFFERS, WAL) of
its two halves, and the blocks each relation of janus.* read, on two existing databases.

For each database (say an empty one and one loaded by benchmarks.retention_history
--keep-loaded NAME), --batches times: 50 new jobs inserted admitted with their admissions,
then the same 50 marked succeeded, each statement explained (rolled forward, not back: the
jobs stay, as in a real run). Prints per database and half, per job: shared buffers hit, read
from outside PostgreSQL, dirtied and written by the backend itself; WAL records, full-page
images and bytes; then per relation the blocks read (pg_statio) per job.

    .venv/bin/python -m benchmarks.retention_explain DATABASE [DATABASE ...] [--batches 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter
from typing import Any

import asyncpg

from benchmarks.retention_history import _admitted, _succeeded
from janus.core.jobs import Admission
from janus.local_services import LocalServices
from janus.store.queries import bind, sql
from janus.store.session import TickParams

BATCH = 50
COUNTERS = ("Shared Hit Blocks", "Shared Read Blocks", "Shared Dirtied Blocks", "Shared Written Blocks")
WAL = ("WAL Records", "WAL FPI", "WAL Bytes")
STATIO = """
SELECT relname AS name, coalesce(heap_blks_read, 0) AS heap, 0 AS idx
  FROM pg_statio_user_tables WHERE schemaname = 'janus'
UNION ALL
SELECT indexrelname, 0, coalesce(idx_blks_read, 0) FROM pg_statio_user_indexes WHERE schemaname = 'janus'
"""


def _plan_totals(plan: dict[str, Any]) -> Counter[str]:
    # The top node's counters include its children's; the CTEs' nodes are its children.
    return Counter({key: int(plan.get(key, 0)) for key in COUNTERS + WAL})


async def _statio(connection: asyncpg.Connection) -> Counter[str]:
    await connection.execute("SELECT pg_stat_force_next_flush()")
    rows = await connection.fetch(STATIO)
    return Counter({row["name"]: int(row["heap"]) + int(row["idx"]) for row in rows})


async def explain(url: str, batches: int, ordered: bool) -> None:
    connection = await asyncpg.connect(url, server_settings={"plan_cache_mode": "force_generic_plan"})
    try:
        holder = uuid.uuid4()
        await connection.execute("DELETE FROM janus.leader")
        await connection.execute(
            "INSERT INTO janus.leader VALUES (true, $1, 1, now() + interval '1 hour')", holder
        )
        text = "EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) " + sql("tick")
        halves: dict[str, Counter[str]] = {"insert": Counter(), "finish": Counter()}
        before = await _statio(connection)
        for _ in range(batches):
            now = time.time()
            if ordered:
                ids = [f"n-{time.time_ns():020d}-{i:03d}" for i in range(BATCH)]
            else:
                ids = [uuid.uuid4().hex for _ in range(BATCH)]
            new = [_admitted(i, now) for i in ids]
            steps = {
                "insert": TickParams.of(holder, 1, now, new, [], [Admission.of(j) for j, _ in new], []),
                "finish": TickParams.of(holder, 1, now, [], [_succeeded(i, now) for i in ids], [], []),
            }
            for half, params in steps.items():
                raw = await connection.fetchval(text, *bind("tick", params))
                halves[half] += _plan_totals(json.loads(raw)[0]["Plan"])
        after = await _statio(connection)
        jobs = batches * BATCH
        print(f"{url.rsplit('/', 1)[-1]}: {jobs} jobs in batches of {BATCH}, per job:")
        for half, totals in halves.items():
            print(
                f"  {half:6s} hit {totals['Shared Hit Blocks'] / jobs:6.2f}  read {totals['Shared Read Blocks'] / jobs:5.3f}"
                f"  dirtied {totals['Shared Dirtied Blocks'] / jobs:5.3f}  written {totals['Shared Written Blocks'] / jobs:5.3f}"
                f"  WAL records {totals['WAL Records'] / jobs:5.2f}  FPI {totals['WAL FPI'] / jobs:5.3f}"
                f"  bytes {totals['WAL Bytes'] / jobs:7.0f}"
            )
        reads = {name: (after[name] - before[name]) / jobs for name in after}
        print("  blocks read per job: " + ", ".join(f"{n} {r:.3f}" for n, r in sorted(reads.items()) if r))
    finally:
        await connection.close()


async def run(databases: list[str], batches: int, ordered: bool) -> None:
    local = LocalServices()
    for database in databases:
        await explain(local.pg_url(database), batches, ordered)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("databases", nargs="+")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--ordered-ids", action="store_true")
    args = parser.parse_args()
    asyncio.run(run(args.databases, args.batches, args.ordered_ids))


if __name__ == "__main__":
    main()
