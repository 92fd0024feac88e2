"""The reads a new core is rebuilt from (`Store.snapshot`): of every dependency for one leader,
of its own dependencies only for a member (the same statements with `dependency = ANY(...)`)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import asyncpg

from janus.store.queries import sql


@dataclass(frozen=True, slots=True)
class SnapshotRows:
    """The rows of each read, undecoded."""

    jobs: list[asyncpg.Record]
    backlog: list[asyncpg.Record]
    admissions: list[asyncpg.Record]
    budget_admissions: list[asyncpg.Record]
    gates: list[asyncpg.Record]
    adaptive: list[asyncpg.Record]


async def snapshot_rows(
    connection: asyncpg.Connection, admissions_since: float, budget_since: float, only: Collection[str] | None
) -> SnapshotRows:
    """The snapshot's reads, in the caller's transaction: of every dependency, or (`only`) the
    same statements with `dependency = ANY(...)` (a member reads no other member's rows)."""
    if only is None:
        return SnapshotRows(
            jobs=await connection.fetch(sql("load_active_jobs")),
            backlog=await connection.fetch(sql("load_backlog")),
            admissions=await connection.fetch(sql("load_admissions_since"), admissions_since),
            budget_admissions=await connection.fetch(sql("load_budget_admissions_since"), budget_since),
            gates=await connection.fetch(sql("load_gates")),
            adaptive=await connection.fetch(sql("load_adaptive")),
        )
    names = sorted(only)
    return SnapshotRows(
        jobs=await connection.fetch(sql("load_active_jobs_of"), names),
        backlog=await connection.fetch(sql("load_backlog_of"), names),
        admissions=await connection.fetch(sql("load_admissions_since_of"), admissions_since, names),
        budget_admissions=await connection.fetch(sql("load_budget_admissions_since_of"), budget_since, names),
        gates=await connection.fetch(sql("load_gates_of"), names),
        adaptive=await connection.fetch(sql("load_adaptive_of"), names),
    )
