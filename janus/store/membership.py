"""Members and per-dependency leases as stored (migration 0010, docs/scale-out.md): heartbeats,
the view the assignment core plans from, and claiming, renewing, releasing and fencing a
dependency's lease, all on the database's clock: `janus run`'s member mode (service/member_mode.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from janus.core.assignment import Lease, Member, View
from janus.errors import LeadershipLost, StoreError
from janus.store.queries import sql
from janus.store.repository import FencedTransaction
from janus.store.rows import DB_ERRORS


@dataclass(frozen=True, kw_only=True, slots=True)
class LiveMember:
    """A live member row as operators see it; times in Unix seconds on the database's clock."""

    member: str
    host: str | None
    started_at: float
    heartbeat_age: float  # seconds since its last heartbeat
    expires_at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Ownership:
    """A dependency's lease row: who holds it, in which epoch, and whether it is still live."""

    dependency: str
    holder: str
    host: str | None  # the holder's, while its member row is kept
    epoch: int
    started_at: float | None  # when this epoch's term began (None: its term row was pruned)
    expires_at: float
    live: bool  # the lease is unexpired
    holder_live: bool  # its holder's member row is live

    @property
    def since(self) -> float | None:
        """Live: since its term began; expired: since it expired."""
        return self.started_at if self.live else self.expires_at


@dataclass(frozen=True, kw_only=True, slots=True)
class Owners:
    """Who leads which dependency, from one read on the database's clock (`now`)."""

    now: float
    members: tuple[LiveMember, ...]
    leases: tuple[Ownership, ...]

    def view(self, dependencies: tuple[str, ...]) -> View:
        """The same read as the assignment core's input (its members are the live ones)."""
        return View(
            now=self.now,
            members=tuple(Member(member=m.member, expires_at=m.expires_at) for m in self.members),
            leases=tuple(
                Lease(dependency=o.dependency, holder=o.holder, epoch=o.epoch, expires_at=o.expires_at)
                for o in self.leases
            ),
            dependencies=dependencies,
        )


class Membership:
    """Each call on a pooled connection of its own, with a deadline; driver errors become
    StoreError. A fenced transaction gets the store's long deadline, as the leader's do."""

    LONG_TIMEOUT = 120.0

    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout

    async def heartbeat(self, member: uuid.UUID, host: str | None, ttl: float) -> float:
        """Keep `member` live for `ttl` seconds; the database's clock (Unix seconds)."""
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as connection:
                now: float = await connection.fetchval(sql("heartbeat_member"), member, host, ttl)
                return now
        except DB_ERRORS as exc:
            raise StoreError(f"member heartbeat failed: {exc}") from exc

    async def leave(self, member: uuid.UUID) -> None:
        """A process that stops deletes its row: the others re-plan at their next poll."""
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as connection:
                await connection.execute(sql("leave_members"), member)
        except DB_ERRORS as exc:
            raise StoreError(f"leaving the members failed: {exc}") from exc

    async def view(self, dependencies: tuple[str, ...]) -> View:
        """Members and leases with the database's clock, read in one statement."""
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as connection:
                rows = await connection.fetch(sql("assignment_view"))
        except DB_ERRORS as exc:
            raise StoreError(f"reading the members and leases failed: {exc}") from exc
        members = tuple(
            Member(member=r["name"], expires_at=r["expires_at"]) for r in rows if r["kind"] == "member"
        )
        leases = tuple(
            Lease(dependency=r["name"], holder=r["holder"], epoch=r["epoch"], expires_at=r["expires_at"])
            for r in rows
            if r["kind"] == "lease"
        )
        return View(now=rows[0]["now"], members=members, leases=leases, dependencies=dependencies)

    async def owners(self) -> Owners:
        """Live members and every dependency's lease, read in one statement (operators' view)."""
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as connection:
                rows = await connection.fetch(sql("owners_view"))
        except DB_ERRORS as exc:
            raise StoreError(f"reading who leads what failed: {exc}") from exc
        members = tuple(
            LiveMember(
                member=r["name"],
                host=r["host"],
                started_at=r["started_at"],
                heartbeat_age=max(0.0, r["heartbeat_age"]),
                expires_at=r["expires_at"],
            )
            for r in rows
            if r["kind"] == "member"
        )
        leases = tuple(
            Ownership(
                dependency=r["name"],
                holder=r["holder"],
                host=r["host"],
                epoch=r["epoch"],
                started_at=r["started_at"],
                expires_at=r["expires_at"],
                live=r["live"],
                holder_live=r["holder_live"],
            )
            for r in rows
            if r["kind"] == "lease"
        )
        return Owners(
            now=rows[0]["now"],
            members=tuple(sorted(members, key=lambda m: (m.started_at, m.member))),
            leases=tuple(sorted(leases, key=lambda o: o.dependency)),
        )

    async def claim(self, dependency: str, holder: uuid.UUID, lease_seconds: float) -> int | None:
        """The new epoch if `holder` now leads `dependency`, else None (held by another, the
        holder not a live member, or an earlier version leading everything)."""
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as connection:
                async with connection.transaction():
                    await connection.execute(sql("lock_assignment_shared"))
                    epoch = await connection.fetchval(
                        sql("claim_dependency"), dependency, holder, lease_seconds
                    )
                return int(epoch) if epoch is not None else None
        except DB_ERRORS as exc:
            raise StoreError(f"claiming {dependency!r} failed: {exc}") from exc

    async def renew(
        self, holder: uuid.UUID, epochs: Mapping[str, int], lease_seconds: float, timeout: float | None = None
    ) -> set[str]:
        """The dependencies still held after renewing all of `epochs` in one statement; the
        others are lost (their writes will be fenced out)."""
        if not epochs:
            return set()
        names = sorted(epochs)
        try:
            async with (
                asyncio.timeout(self._timeout if timeout is None else timeout),
                self._pool.acquire() as connection,
            ):
                rows = await connection.fetch(
                    sql("renew_dependencies"), holder, names, [epochs[n] for n in names], lease_seconds
                )
        except DB_ERRORS as exc:
            raise StoreError(f"renewing dependency leases failed: {exc}") from exc
        return {row["dependency"] for row in rows}

    async def release(self, dependency: str, holder: uuid.UUID, epoch: int) -> None:
        """End a term at once (after its last commit: the handover's last step)."""
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as connection:
                await connection.execute(sql("release_dependency"), dependency, holder, epoch)
        except DB_ERRORS as exc:
            raise StoreError(f"releasing {dependency!r} failed: {exc}") from exc

    @asynccontextmanager
    async def fenced(self, holder: uuid.UUID, epochs: Mapping[str, int]) -> AsyncIterator[FencedTransaction]:
        """A transaction that commits only if `holder` still leads every dependency of `epochs`
        in its epoch: their lease rows stay locked (share) until it ends, so no claim commits
        first. LeadershipLost names the dependencies no longer held."""
        names = sorted(epochs)
        try:
            async with (
                asyncio.timeout(self.LONG_TIMEOUT),
                self._pool.acquire() as connection,
                connection.transaction(),
            ):
                rows = await connection.fetch(
                    sql("fence_dependencies"), holder, names, [epochs[n] for n in names]
                )
                lost = sorted(set(names) - {row["dependency"] for row in rows})
                if lost:
                    raise LeadershipLost(f"no longer leading {', '.join(lost)}")
                yield FencedTransaction(connection)
        except DB_ERRORS as exc:
            raise StoreError(f"fenced transaction failed: {exc}") from exc

    async def mark_applied(
        self, holder: uuid.UUID, epochs: Mapping[str, int], *, steering_up_to: int | None, version: int | None
    ) -> None:
        """Member mode: the owner of `epochs` applied the steering rows of these dependencies up
        to `steering_up_to`, and runs `version` of the policy; fenced by their leases."""
        async with self.fenced(holder, epochs) as tx:
            if steering_up_to is not None:
                await tx.mark_steering_applied_of(steering_up_to, epochs)
            if version is not None:
                await tx.mark_version_applied(version, max(epochs.values(), default=0))

    async def revived_up_to(self) -> int:
        """The newest retry request that revived jobs (0: none)."""
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as connection:
                return int(await connection.fetchval(sql("revived_up_to")))
        except DB_ERRORS as exc:
            raise StoreError(f"reading retry requests failed: {exc}") from exc

    async def prune(self, gone_for: float) -> int:
        """Delete the rows of members gone for longer than `gone_for` seconds."""
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as connection:
                status = await connection.execute(sql("prune_members"), gone_for)
        except DB_ERRORS as exc:
            raise StoreError(f"pruning members failed: {exc}") from exc
        return int(status.split()[-1])

    async def prune_terms(self, before: float, limit: int) -> int:
        """At most `limit` ended dependency terms that started before `before` (Unix seconds);
        the global owner's housekeeping, beside today's leader terms."""
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as connection:
                status = await connection.execute(sql("prune_dependency_terms"), before, limit)
        except DB_ERRORS as exc:
            raise StoreError(f"pruning dependency terms failed: {exc}") from exc
        return int(status.split()[-1])
