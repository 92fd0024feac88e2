"""The only code that talks to PostgreSQL. asyncpg errors do not leave this module."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from asyncpg.exceptions._base import DataError as _ArgumentError  # client side: not encodable

from janus.core.circuit import CircuitSnapshot, CircuitState
from janus.core.gates import GateState
from janus.core.jobs import Admission, Job, JobState
from janus.core.repeats import StoredAttempt
from janus.core.scheduler import PageRequest
from janus.errors import LeadershipLost, StatementRefused, StoreError
from janus.store.migrate import migrate
from janus.store.queries import sql

# What a lost, refused or hung database raises through asyncpg: all become StoreError here.
# InterfaceError covers a connection that died under us (ConnectionDoesNotExistError), and
# InternalClientError a connection left mid-operation by a cancelled statement.
_DB_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Backlog:
    dependency: str
    scope: str
    waiting: int
    max_seq: int


@dataclass(frozen=True, kw_only=True, slots=True)
class JobPosition:
    job_id: str
    dependency: str
    scope: str
    state: JobState
    attempt: int
    failures: int
    eligible_at: float
    last_error: str | None
    ahead_in_scope: int | None  # first attempts of its scope stored before it (waiting first attempts)


@dataclass(frozen=True, kw_only=True, slots=True)
class FailedAttempt:
    """One line of a job's error history."""

    job_id: str
    attempt: int
    failed_at: float
    error: str


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryRequest:
    id: int
    job_id: str | None
    dependency: str | None
    scope: str | None


def _job(row: asyncpg.Record) -> Job:
    return Job(
        job_id=row["job_id"],
        dependency=row["dependency"],
        scope=row["scope"],
        payload=json.loads(row["payload"]) if row["payload"] is not None else None,
        seq=row["seq"],
        state=JobState(row["state"]),
        attempt=row["attempt"],
        failures=row["failures"],
        eligible_at=row["eligible_at"],
        admitted_at=row["admitted_at"],
        expires_at=row["expires_at"],
        lease_deadline=row["lease_deadline"],
        last_error=row["last_error"],
    )


# SQLSTATE classes of errors about what a statement carried, not about the server or the
# connection: data exceptions, integrity violations, program limits (e.g. an index row too
# large), and errors raised by PL/pgSQL (triggers).
_DATA_ERROR_CLASSES = frozenset({"22", "23", "54", "P0"})


def refused_for_its_data(exc: asyncpg.PostgresError) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in _DATA_ERROR_CLASSES


class LeaderSession:
    """The leader's own connection for a term: one statement per admission tick.

    Held for the whole term rather than taken from the pool per tick, so that no tick
    pays for the pool's connection reset, and the tick statement stays prepared.
    """

    def __init__(
        self, connection: asyncpg.Connection, holder: uuid.UUID, epoch: int, timeout: float = 5.0
    ) -> None:
        self._connection = connection
        self._holder = holder
        self._epoch = epoch
        self._timeout = timeout

    async def tick(
        self,
        now: float,
        new: Sequence[tuple[Job, str | None]],
        updated: Sequence[Job],
        admissions: Sequence[Admission],
        *,
        failed: Sequence[FailedAttempt] = (),
        gates: Sequence[GateState] = (),
    ) -> set[str]:
        """Write one tick atomically, fenced by the lease; returns the ids of the new jobs stored.

        `new` pairs each submitted job (in its latest state) with its payload as JSON text.
        A submitted job whose id the store already had is not written, nor its admission.
        A tick that failed attempts or changed a dependency's gates writes them too, in the
        same transaction (a second statement only then: most ticks have neither).
        """
        if not (new or updated or admissions or failed or gates):
            return set()
        try:
            if not (failed or gates):
                return await self._tick(now, new, updated, admissions)
            async with self._connection.transaction():
                inserted = await self._tick(now, new, updated, admissions)
                await self._connection.fetchrow(
                    sql("tick_retry_control"),
                    now,
                    [f.job_id for f in failed],
                    [f.attempt for f in failed],
                    [f.failed_at for f in failed],
                    [f.error for f in failed],
                    [g.dependency for g in gates],
                    [g.circuit.state.value for g in gates],
                    [g.circuit.since for g in gates],
                    [g.circuit.open_until for g in gates],
                    [g.circuit.open_for for g in gates],
                    [g.pause_until for g in gates],
                    timeout=self._timeout,
                )
                return inserted
        except _DB_ERRORS as exc:
            raise StoreError(f"admission tick failed: {exc}") from exc

    async def _tick(
        self,
        now: float,
        new: Sequence[tuple[Job, str | None]],
        updated: Sequence[Job],
        admissions: Sequence[Admission],
    ) -> set[str]:
        jobs = [job for job, _ in new]
        try:
            row = await self._connection.fetchrow(
                sql("tick"),
                self._holder,
                self._epoch,
                now,
                [j.job_id for j in jobs],
                [j.dependency for j in jobs],
                [j.scope for j in jobs],
                [payload for _, payload in new],
                [j.state.value for j in jobs],
                [j.attempt for j in jobs],
                [j.eligible_at for j in jobs],
                [j.admitted_at for j in jobs],
                [j.expires_at for j in jobs],
                [j.lease_deadline for j in jobs],
                [j.job_id for j in updated],
                [j.state.value for j in updated],
                [j.attempt for j in updated],
                [j.failures for j in updated],
                [j.eligible_at for j in updated],
                [j.admitted_at for j in updated],
                [j.expires_at for j in updated],
                [j.lease_deadline for j in updated],
                [j.last_error for j in updated],
                [j.finished_at for j in updated],
                [a.job_id for a in admissions],
                [a.attempt for a in admissions],
                [a.dependency for a in admissions],
                [a.scope for a in admissions],
                [a.admitted_at for a in admissions],
                [j.seq for j in jobs],
                [a.retry for a in admissions],
                timeout=self._timeout,
            )
        except asyncpg.PostgresError as exc:
            if refused_for_its_data(exc):
                raise StatementRefused(f"PostgreSQL refused the admission tick: {exc}") from exc
            raise StoreError(f"admission tick failed: {exc}") from exc
        except _ArgumentError as exc:
            raise StatementRefused(f"an argument of the admission tick could not be encoded: {exc}") from exc
        except _DB_ERRORS as exc:
            raise StoreError(f"admission tick failed: {exc}") from exc
        assert row is not None
        if row["leading"] == 0:
            raise LeadershipLost(f"lease for epoch {self._epoch} is no longer held: the tick wrote nothing")
        if row["updated"] != len(updated):
            # Every changed job was stored by an earlier tick; a miss means the core and the
            # database disagree, and only a rebuild from the database can settle it.
            raise StoreError(f"tick updated {row['updated']} of {len(updated)} changed jobs")
        return set(row["inserted"])

    async def reported_attempts(self, reported: Sequence[tuple[str, int]]) -> list[StoredAttempt | None]:
        """For each (job_id, attempt) a result reported: what the store holds of the job and of
        that attempt (None if it never had the job)."""
        if not reported:
            return []
        try:
            rows = await self._connection.fetch(
                sql("reported_attempts"),
                [job_id for job_id, _ in reported],
                [attempt for _, attempt in reported],
                timeout=self._timeout,
            )
        except _DB_ERRORS as exc:
            raise StoreError(f"looking up reported attempts failed: {exc}") from exc
        found: list[StoredAttempt | None] = [None] * len(reported)
        for row in rows:
            found[row["ord"] - 1] = StoredAttempt(
                dependency=row["dependency"],
                state=JobState(row["state"]),
                last_attempt=row["attempt"],
                error=row["error"],
            )
        return found

    async def load_pages(self, requests: Sequence[PageRequest]) -> list[list[Job]]:
        """The next first attempts of each requested scope (one list per request, in seq order)."""
        if not requests:
            return []
        try:
            rows = await self._connection.fetch(
                sql("load_pages"),
                [r.dependency for r in requests],
                [r.scope for r in requests],
                [r.after_seq for r in requests],
                [r.limit for r in requests],
                timeout=self._timeout,
            )
        except _DB_ERRORS as exc:
            raise StoreError(f"paging waiting jobs failed: {exc}") from exc
        pages: list[list[Job]] = [[] for _ in requests]
        for row in rows:
            pages[row["ord"] - 1].append(_job(row))
        return pages


class FencedTransaction:
    """Housekeeping writes of the leader outside the tick, in a transaction fenced by the lease."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def prune_admissions(self, before: float) -> int:
        status = await self._connection.execute(sql("prune_admissions"), before)
        return int(status.split()[-1])

    async def take_retry_requests(self) -> list[RetryRequest]:
        rows = await self._connection.fetch(sql("take_retry_requests"))
        return [
            RetryRequest(id=r["id"], job_id=r["job_id"], dependency=r["dependency"], scope=r["scope"])
            for r in rows
        ]

    async def revive_dead_jobs(
        self, request: RetryRequest, now: float, configured: Sequence[str]
    ) -> list[Job]:
        rows = await self._connection.fetch(
            sql("revive_dead_jobs"), now, request.job_id, request.dependency, request.scope, list(configured)
        )
        await self._connection.execute(sql("finish_retry_request"), request.id, len(rows))
        return [_job(row) for row in rows]


class Store:
    """The pool, and every statement outside the tick.

    `timeout` bounds connecting and each short statement (leadership, clock, tick): a hung
    database must raise StoreError in bounded time, never keep a caller waiting. Rebuilding
    and housekeeping, which scan tables, get `LONG_TIMEOUT`.
    """

    LONG_TIMEOUT = 120.0

    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self._pool = pool
        self.timeout = timeout

    @classmethod
    async def connect(cls, url: str, *, application_name: str = "janus", timeout: float = 5.0) -> Store:
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=4,
                timeout=timeout,
                # The tick statement runs thousands of times a second with the same shape: plan it once.
                server_settings={
                    "application_name": application_name,
                    "plan_cache_mode": "force_generic_plan",
                },
            )
        except _DB_ERRORS as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
        return cls(pool, timeout)

    async def close(self) -> None:
        """Gracefully, within the timeout; a database that does not answer gets its connections cut."""
        try:
            await asyncio.wait_for(self._pool.close(), self.timeout)
        except _DB_ERRORS:
            self._pool.terminate()

    def terminate(self) -> None:
        """Cut every connection now (after a failure: nothing to wait for)."""
        self._pool.terminate()

    async def migrate(self) -> list[int]:
        try:
            async with asyncio.timeout(self.LONG_TIMEOUT), self._pool.acquire() as connection:
                return await migrate(connection)
        except _DB_ERRORS as exc:
            raise StoreError(f"migrating the schema failed: {exc}") from exc

    # -- leadership -----------------------------------------------------------

    async def try_acquire(self, holder: uuid.UUID, lease_seconds: float) -> int | None:
        """The new epoch if this process now leads, else None."""
        try:
            async with asyncio.timeout(self.timeout), self._pool.acquire() as connection:
                async with connection.transaction():
                    epoch = await connection.fetchval(sql("acquire_lease"), holder, lease_seconds)
                    if epoch is not None:
                        await connection.execute(sql("record_term"), epoch, holder)
                return int(epoch) if epoch is not None else None
        except _DB_ERRORS as exc:
            raise StoreError(f"leader election failed: {exc}") from exc

    async def renew(
        self, holder: uuid.UUID, epoch: int, lease_seconds: float, timeout: float | None = None
    ) -> bool:
        """True if renewed, False if this term no longer holds the lease; StoreError if unknown
        (including no answer within `timeout`)."""
        try:
            async with (
                asyncio.timeout(self.timeout if timeout is None else timeout),
                self._pool.acquire() as connection,
            ):
                renewed = await connection.fetchval(sql("renew_lease"), holder, epoch, lease_seconds)
                return renewed is not None
        except _DB_ERRORS as exc:
            raise StoreError(f"lease renewal failed: {exc}") from exc

    async def release(self, holder: uuid.UUID, epoch: int, timeout: float | None = None) -> None:
        try:
            async with (
                asyncio.timeout(self.timeout if timeout is None else timeout),
                self._pool.acquire() as connection,
            ):
                await connection.execute(sql("release_lease"), holder, epoch)
        except _DB_ERRORS as exc:
            raise StoreError(f"lease release failed: {exc}") from exc

    @asynccontextmanager
    async def leader_session(self, holder: uuid.UUID, epoch: int) -> AsyncIterator[LeaderSession]:
        """A connection of this term's own, for the admission ticks."""
        try:
            async with self._pool.acquire(timeout=self.timeout) as connection:
                yield LeaderSession(connection, holder, epoch, self.timeout)
        except _DB_ERRORS as exc:
            raise StoreError(f"leader connection failed: {exc}") from exc

    @asynccontextmanager
    async def leader_transaction(self, holder: uuid.UUID, epoch: int) -> AsyncIterator[FencedTransaction]:
        """A transaction that commits only if this process still holds the lease at `epoch`."""
        try:
            async with (
                asyncio.timeout(self.LONG_TIMEOUT),
                self._pool.acquire() as connection,
                connection.transaction(),
            ):
                if await connection.fetchval(sql("fence"), holder, epoch) is None:
                    raise LeadershipLost(f"lease for epoch {epoch} is no longer held")
                yield FencedTransaction(connection)
        except _DB_ERRORS as exc:
            raise StoreError(f"leader transaction failed: {exc}") from exc

    # -- rebuilding the core ----------------------------------------------------

    async def _read(
        self, name: str, *args: object, what: str, timeout: float | None = None
    ) -> list[asyncpg.Record]:
        """One named read on a pooled connection, with a deadline; driver errors become StoreError."""
        try:
            async with asyncio.timeout(self.LONG_TIMEOUT if timeout is None else timeout):
                async with self._pool.acquire() as connection:
                    rows: list[asyncpg.Record] = await connection.fetch(sql(name), *args)
                    return rows
        except _DB_ERRORS as exc:
            raise StoreError(f"{what} failed: {exc}") from exc

    async def _read_one(
        self, name: str, *args: object, what: str, timeout: float | None = None
    ) -> asyncpg.Record | None:
        rows = await self._read(name, *args, what=what, timeout=timeout)
        return rows[0] if rows else None

    async def load_active_jobs(self) -> list[Job]:
        rows = await self._read("load_active_jobs", what="loading jobs")
        return [_job(row) for row in rows]

    async def load_backlog(self) -> list[Backlog]:
        """Per scope, the first attempts waiting in the store (the leader pages them in)."""
        rows = await self._read("load_backlog", what="loading the backlog")
        return [
            Backlog(
                dependency=row["dependency"],
                scope=row["scope"],
                waiting=row["waiting"],
                max_seq=row["max_seq"],
            )
            for row in rows
        ]

    async def job_position(self, job_id: str) -> JobPosition | None:
        """A job as stored, and how many first attempts of its scope wait before it."""
        row = await self._read_one(
            "job_position", job_id, what=f"reading job {job_id!r}", timeout=self.timeout
        )
        if row is None:
            return None
        return JobPosition(
            job_id=row["job_id"],
            dependency=row["dependency"],
            scope=row["scope"],
            state=JobState(row["state"]),
            attempt=row["attempt"],
            failures=row["failures"],
            eligible_at=row["eligible_at"],
            last_error=row["last_error"],
            ahead_in_scope=row["ahead"],
        )

    async def load_admissions_since(self, since: float) -> dict[str, list[tuple[str, float]]]:
        """Per dependency, (scope, admitted_at) of the admissions after `since`."""
        rows = await self._read("load_admissions_since", since, what="loading admissions")
        history: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for row in rows:
            history[row["dependency"]].append((row["scope"], row["admitted_at"]))
        return history

    async def job_states(self) -> dict[str, str]:
        """Every job's state (for the audit and operators), job_id -> state."""
        rows = await self._read("job_states", what="reading job states")
        return {row["job_id"]: row["state"] for row in rows}

    async def load_budget_admissions_since(self, since: float) -> dict[str, list[tuple[float, bool]]]:
        """Per dependency, (admitted_at, retry) of the admissions after `since`: the retry budgets."""
        rows = await self._read("load_budget_admissions_since", since, what="loading admissions")
        history: dict[str, list[tuple[float, bool]]] = defaultdict(list)
        for row in rows:
            history[row["dependency"]].append((row["admitted_at"], row["retry"]))
        return history

    async def load_gates(self) -> list[GateState]:
        rows = await self._read("load_gates", what="loading circuits and pauses")
        return [
            GateState(
                dependency=row["dependency"],
                circuit=CircuitSnapshot(
                    state=CircuitState(row["circuit_state"]),
                    since=row["circuit_since"],
                    open_until=row["open_until"],
                    open_for=row["open_for"],
                ),
                pause_until=row["pause_until"],
            )
            for row in rows
        ]

    # -- dead jobs --------------------------------------------------------------

    async def revive_requested(
        self, holder: uuid.UUID, epoch: int, now: float, configured: Sequence[str]
    ) -> list[Job]:
        """Apply every pending `janus jobs retry` request (leader only, fenced): the jobs revived."""
        try:
            async with asyncio.timeout(self.timeout), self._pool.acquire() as connection:
                if not await connection.fetchval(sql("retry_requests_pending")):
                    return []
        except _DB_ERRORS as exc:
            raise StoreError(f"reading retry requests failed: {exc}") from exc
        revived: list[Job] = []
        async with self.leader_transaction(holder, epoch) as tx:
            for request in await tx.take_retry_requests():
                revived += await tx.revive_dead_jobs(request, now, configured)
        return revived

    async def request_retry(
        self, *, job_id: str | None = None, dependency: str | None = None, scope: str | None = None
    ) -> tuple[int, int]:
        """Record a request to give dead jobs another life: (request id, dead jobs matching now)."""
        try:
            async with (
                asyncio.timeout(self.timeout),
                self._pool.acquire() as connection,
                connection.transaction(),
            ):
                matching = await connection.fetchval(sql("count_dead_jobs"), job_id, dependency, scope)
                request = await connection.fetchval(sql("request_retry"), job_id, dependency, scope)
        except _DB_ERRORS as exc:
            raise StoreError(f"recording the retry request failed: {exc}") from exc
        return int(request), int(matching)

    async def retry_request_status(self, request: int) -> int | None:
        """How many jobs the leader revived for the request; None while it is pending."""
        row = await self._read_one(
            "retry_request_status", request, what="reading the retry request", timeout=self.timeout
        )
        if row is None or not row["handled"]:
            return None
        return int(row["revived"])

    async def job_state(self, job_id: str) -> dict[str, object] | None:
        """The job's row (state, dependency, scope, attempt, failures, last_error, finished_at)."""
        row = await self._read_one("job_state", job_id, what=f"reading job {job_id!r}", timeout=self.timeout)
        return dict(row) if row is not None else None

    async def error_history(self, job_id: str) -> list[FailedAttempt]:
        rows = await self._read(
            "attempt_errors", job_id, what=f"reading the errors of {job_id!r}", timeout=self.timeout
        )
        return [
            FailedAttempt(job_id=job_id, attempt=r["attempt"], failed_at=r["failed_at"], error=r["error"])
            for r in rows
        ]

    async def prune_admissions(self, holder: uuid.UUID, epoch: int, before: float) -> int:
        async with self.leader_transaction(holder, epoch) as tx:
            return await tx.prune_admissions(before)

    async def database_time(self) -> float:
        try:
            async with asyncio.timeout(self.timeout), self._pool.acquire() as connection:
                return float(await connection.fetchval(sql("database_time")))
        except _DB_ERRORS as exc:
            raise StoreError(f"reading the database clock failed: {exc}") from exc
