"""The policy of record and operators' steering as stored (migration 0004): what the CLI writes
and reads. The leader's fenced writes are `FencedTransaction`'s (store/repository.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from janus.errors import StoreError
from janus.store.queries import sql
from janus.store.rows import DB_ERRORS


@dataclass(frozen=True, kw_only=True, slots=True)
class PolicyVersion:
    version: int
    policy: str  # the file's content as JSON, without connection settings
    applied: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class SteeringRow:
    id: int
    dependency: str
    kind: str  # pause, resume, override, clear
    until: float | None  # Unix seconds, database clock
    concurrency: int | None
    rate_limits: tuple[str, ...] | None
    actor: str
    reason: str | None

    @property
    def by(self) -> str:
        """Who, and why: what `janus why` shows after "paused by" / "overridden by"."""
        return self.actor + (f": {self.reason}" if self.reason else "")


@dataclass(frozen=True, kw_only=True, slots=True)
class Change:
    """One line of `janus history`: a policy version, or a steering row."""

    what: str  # "version" or "steering"
    id: int
    dependency: str | None
    kind: str | None
    until: float | None
    concurrency: int | None
    rate_limits: tuple[str, ...] | None
    actor: str
    reason: str | None
    diff: str | None
    created_at: datetime
    applied_at: datetime | None


def steering_row(row: asyncpg.Record) -> SteeringRow:
    limits = row["rate_limits"]
    return SteeringRow(
        id=row["id"],
        dependency=row["dependency"],
        kind=row["kind"],
        until=row["until"],
        concurrency=row["concurrency"],
        rate_limits=tuple(limits) if limits is not None else None,
        actor=row["actor"],
        reason=row["reason"],
    )


class PolicyLog:
    """Reads and the CLI's writes, each on a pooled connection with a deadline."""

    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout

    async def _fetch(self, name: str, *args: object, what: str) -> list[asyncpg.Record]:
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as connection:
                rows: list[asyncpg.Record] = await connection.fetch(sql(name), *args)
                return rows
        except DB_ERRORS as exc:
            raise StoreError(f"{what} failed: {exc}") from exc

    async def newest(self) -> PolicyVersion | None:
        rows = await self._fetch("newest_policy_version", what="reading the policy of record")
        if not rows:
            return None
        return PolicyVersion(version=rows[0]["version"], policy=rows[0]["policy"], applied=rows[0]["applied"])

    async def newest_version_number(self) -> int | None:
        rows = await self._fetch("newest_version_number", what="reading the policy of record")
        return rows[0]["version"] if rows else None

    async def versions(self) -> list[PolicyVersion]:
        rows = await self._fetch("policy_versions", what="reading the policy versions")
        return [PolicyVersion(version=row["version"], policy=row["policy"]) for row in rows]

    async def running_version(self) -> int | None:
        rows = await self._fetch("running_version", what="reading the running version")
        return rows[0]["version"] if rows else None

    async def leader_alive(self) -> bool:
        rows = await self._fetch("leader_alive", what="reading the leader lease")
        return bool(rows[0]["alive"])

    async def steering_in_force(self) -> tuple[int, list[SteeringRow]]:
        """The highest steering id, then the latest pause-or-resume and override-or-clear of each
        dependency (read in that order: a row newer than the id may be among them, never missing)."""
        top = await self._fetch("max_steering_id", what="reading the steering")
        rows = await self._fetch("steering_in_force", what="reading the steering")
        return int(top[0]["id"]), [steering_row(row) for row in rows]

    async def steering_pending(self) -> bool:
        rows = await self._fetch("steering_pending", what="reading the steering")
        return bool(rows[0]["pending"])

    async def steering_applied(self, id: int) -> bool:
        rows = await self._fetch("steering_applied", id, what="reading the steering")
        return bool(rows and rows[0]["applied"])

    async def record_version(
        self, policy: str, actor: str, reason: str | None, diff: Callable[[str | None], str]
    ) -> tuple[int, str]:
        """Store `policy` as the next version, its diff against the newest (`diff(newest)`):
        (version, diff). One at a time: each diff is against the version just before. A policy
        that changes nothing is not stored: (the newest version, "no change")."""
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._pool.acquire() as connection,
                connection.transaction(),
            ):
                await connection.execute(sql("lock_policy_versions"))
                newest = await connection.fetchrow(sql("newest_policy_version"))
                version = (newest["version"] if newest is not None else 0) + 1
                changes = diff(newest["policy"] if newest is not None else None)
                if newest is not None and changes == "no change":
                    return newest["version"], changes
                await connection.execute(
                    sql("record_policy_version"), version, policy, actor, reason, changes
                )
                return version, changes
        except DB_ERRORS as exc:
            raise StoreError(f"recording the policy version failed: {exc}") from exc

    async def record_steering(
        self,
        *,
        dependency: str,
        kind: str,
        lasts: float | None,
        concurrency: int | None = None,
        rate_limits: list[str] | None = None,
        actor: str,
        reason: str | None,
    ) -> tuple[int, float | None]:
        """A pause, resume, override or clear, for the leader to apply: (id, until)."""
        rows = await self._fetch(
            "record_steering",
            dependency,
            kind,
            lasts,
            concurrency,
            rate_limits,
            actor,
            reason,
            what=f"recording the {kind}",
        )
        return int(rows[0]["id"]), rows[0]["until"]

    async def history(self, dependency: str | None) -> list[Change]:
        """Every change, oldest first (`janus history`)."""
        rows = await self._fetch("change_history", dependency, what="reading the history")
        return [change_row(row) for row in rows]

    async def recent(self, count: int) -> list[Change]:
        """The `count` newest changes, newest first (the status's recent changes)."""
        rows = await self._fetch("recent_changes", count, what="reading the recent changes")
        return [change_row(row) for row in rows]


def change_row(row: asyncpg.Record) -> Change:
    return Change(
        what=row["what"],
        id=row["id"],
        dependency=row["dependency"],
        kind=row["kind"],
        until=row["until"],
        concurrency=row["concurrency"],
        rate_limits=tuple(row["rate_limits"]) if row["rate_limits"] is not None else None,
        actor=row["actor"],
        reason=row["reason"],
        diff=row["diff"],
        created_at=row["created_at"],
        applied_at=row["applied_at"],
    )
