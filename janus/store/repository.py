"""The store: the pool, leadership, the snapshot a new term rebuilds from, housekeeping, and what
operators ask. With store/session.py (the leader's ticks) the only code that talks to
PostgreSQL; asyncpg's errors become StoreError before they leave."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from janus.core.jobs import Job, JobState
from janus.core.rebuild import Snapshot
from janus.core.retention import TableChurn
from janus.errors import LeadershipLost, StoreError
from janus.store.migrate import migrate
from janus.store.outbox import OutboxStore
from janus.store.pooling import connect_options
from janus.store.queries import sql
from janus.store.refusals import settings_error
from janus.store.rows import (
    DB_ERRORS,
    FailedAttempt,
    adaptive_from_row,
    backlog_from_row,
    gate_from_row,
    job_from_row,
)
from janus.store.session import LeaderSession
from janus.store.snapshot_reads import snapshot_rows
from janus.store.steering import PolicyLog

if TYPE_CHECKING:
    from janus.store.membership import Membership


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
class DeadJob:
    job_id: str
    dependency: str
    last_error: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class OldestFinished:
    state: JobState
    dependency: str
    finished_at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class TableSize:
    name: str
    live_rows: int  # PostgreSQL's statistics, not a count(*)
    bytes: int  # on disk, with indexes and TOAST


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryRequest:
    id: int
    job_id: str | None
    dependency: str | None
    scope: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class PrunedRecords:
    """What one batch of pruning the leader's own records deleted."""

    retry_requests: int
    leader_terms: int

    @property
    def total(self) -> int:
        return self.retry_requests + self.leader_terms


@dataclass(frozen=True, kw_only=True, slots=True)
class LeaseHolder:
    holder: uuid.UUID
    epoch: int
    live: bool  # the lease has not expired
    address: str | None  # the host its connections come from (None: not connected, or a local socket)


class FencedTransaction:
    """Housekeeping writes of the leader outside the tick, in a transaction fenced by the lease."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def prune_admissions(self, before: float) -> int:
        status = await self._connection.execute(sql("prune_admissions"), before)
        return int(status.split()[-1])

    async def prune_finished(
        self, state: JobState, dependency: str, before: float, limit: int, statement_timeout: float
    ) -> int:
        """At most `limit` jobs of `dependency` in terminal `state` that finished before `before`,
        and their error history; a statement past `statement_timeout` seconds is cancelled."""
        await self._connection.execute(
            sql("limit_statement_time"), str(max(1, round(statement_timeout * 1000)))
        )
        # Two statements, not one with the state as a parameter: only then can a generic plan
        # use the state's partial index.
        if state is JobState.SUCCEEDED:
            pruned = await self._connection.fetchval(sql("prune_succeeded"), dependency, before, limit)
        elif state is JobState.DEAD:
            pruned = await self._connection.fetchval(sql("prune_dead"), dependency, before, limit)
        else:
            raise ValueError(f"a {state.value} job is never pruned")
        return int(pruned)

    async def prune_records(self, before: float, limit: int) -> PrunedRecords:
        """At most `limit` handled retry requests and `limit` ended leader terms from before `before`."""
        requests = await self._connection.execute(sql("prune_retry_requests"), before, limit)
        terms = await self._connection.execute(sql("prune_leader_terms"), before, limit)
        return PrunedRecords(retry_requests=int(requests.split()[-1]), leader_terms=int(terms.split()[-1]))

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
        return [job_from_row(row) for row in rows]

    async def record_first_version(self, policy: str, actor: str, reason: str, diff: str) -> None:
        """`janus run`'s file as version 1, if no version is stored yet."""
        await self._connection.execute(sql("lock_policy_versions"))
        await self._connection.execute(sql("record_first_version"), policy, actor, reason, diff)

    async def mark_version_applied(self, version: int, epoch: int) -> None:
        await self._connection.execute(sql("mark_version_applied"), version, epoch)

    async def mark_steering_applied(self, up_to: int, epoch: int) -> None:
        await self._connection.execute(sql("mark_steering_applied"), up_to, epoch)

    async def mark_steering_applied_of(self, up_to: int, epochs: Mapping[str, int]) -> None:
        """Member mode: the rows of these dependencies only, each with its dependency's epoch."""
        names = sorted(epochs)
        await self._connection.execute(
            sql("mark_steering_applied_of"), up_to, names, [epochs[n] for n in names]
        )


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
            options = connect_options(url)  # behind PgBouncer: janus/store/pooling.py
            settings = {"application_name": application_name}
            if options.statement_cache_size is None:
                # The tick statement runs thousands of times a second with the same shape: plan it once.
                settings["plan_cache_mode"] = "force_generic_plan"
            pool = await asyncpg.create_pool(
                options.url,
                min_size=1,
                # The tick's session, lease renewal, and the leader's housekeeping (retry
                # requests, pruning) each hold one at times; a spare for operators' questions.
                max_size=6,
                timeout=timeout,
                server_settings=settings,
                **(
                    {}
                    if options.statement_cache_size is None
                    else {"statement_cache_size": options.statement_cache_size}
                ),
            )
        except (*DB_ERRORS, ValueError) as exc:  # ValueError: a malformed URL
            raise settings_error(exc, url) or StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
        return cls(pool, timeout)

    async def close(self) -> None:
        """Gracefully, within the timeout; a database that does not answer gets its connections cut."""
        try:
            await asyncio.wait_for(self._pool.close(), self.timeout)
        except DB_ERRORS:
            self._pool.terminate()

    def terminate(self) -> None:
        """Cut every connection now (after a failure: nothing to wait for)."""
        self._pool.terminate()

    async def migrate(self) -> list[int]:
        try:
            async with asyncio.timeout(self.LONG_TIMEOUT), self._pool.acquire() as connection:
                return await migrate(connection)
        except DB_ERRORS as exc:
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
        except DB_ERRORS as exc:
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
        except DB_ERRORS as exc:
            raise StoreError(f"lease renewal failed: {exc}") from exc

    async def release(self, holder: uuid.UUID, epoch: int, timeout: float | None = None) -> None:
        try:
            async with (
                asyncio.timeout(self.timeout if timeout is None else timeout),
                self._pool.acquire() as connection,
            ):
                await connection.execute(sql("release_lease"), holder, epoch)
        except DB_ERRORS as exc:
            raise StoreError(f"lease release failed: {exc}") from exc

    @asynccontextmanager
    async def leader_session(
        self, holder: uuid.UUID, epoch: int, fenced: Mapping[str, int] | None = None
    ) -> AsyncIterator[LeaderSession]:
        """A connection of this term's own, for the admission ticks (`fenced`: member mode's
        dependencies and epochs, store/session.py)."""
        try:
            async with self._pool.acquire(timeout=self.timeout) as connection:
                yield LeaderSession(connection, holder, epoch, self.timeout, fenced)
        except DB_ERRORS as exc:
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
        except DB_ERRORS as exc:
            raise StoreError(f"leader transaction failed: {exc}") from exc

    @property
    def policy_log(self) -> PolicyLog:
        """The policy versions and the operators' steering (`janus apply`, `pause`, `override`...)."""
        return PolicyLog(self._pool, self.timeout)

    @property
    def outbox(self) -> OutboxStore:
        """The outcomes committed and not yet confirmed by the broker (service/outbox.py)."""
        return OutboxStore(self._pool, self.timeout)

    @property
    def membership(self) -> Membership:
        """Members and dependency leases (scale-out's member mode, docs/scale-out.md)."""
        from janus.store.membership import Membership  # it imports this module

        return Membership(self._pool, self.timeout)

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
        except DB_ERRORS as exc:
            raise StoreError(f"{what} failed: {exc}") from exc

    async def _read_one(
        self, name: str, *args: object, what: str, timeout: float | None = None
    ) -> asyncpg.Record | None:
        rows = await self._read(name, *args, what=what, timeout=timeout)
        return rows[0] if rows else None

    async def snapshot(
        self, *, admissions_since: float, budget_since: float, only: Collection[str] | None = None
    ) -> Snapshot:
        """What a new core is rebuilt from (`Scheduler.rebuilt`), read as of one moment: the
        unfinished jobs it holds, the backlogs, the admissions after `admissions_since` (rate
        windows) and after `budget_since` (retry budgets), and the circuits and pauses.
        `only`: of these dependencies alone (a member's term reads no other member's rows);
        None: of every dependency (one leader)."""
        try:
            async with (
                asyncio.timeout(self.LONG_TIMEOUT),
                self._pool.acquire() as connection,
                connection.transaction(isolation="repeatable_read", readonly=True),
            ):
                rows = await snapshot_rows(connection, admissions_since, budget_since, only)
                jobs = [job_from_row(row) for row in rows.jobs]
                backlog = [backlog_from_row(row) for row in rows.backlog]
                admissions: dict[str, list[tuple[str, float]]] = defaultdict(list)
                charges: dict[str, list[tuple[str, int, float, float]]] = defaultdict(list)
                for row in rows.admissions:
                    admissions[row["dependency"]].append((row["scope"], row["admitted_at"]))
                    charges[row["dependency"]].append(
                        (row["job_id"], row["attempt"], row["admitted_at"], row["units"])
                    )
                budgets: dict[str, list[tuple[float, bool]]] = defaultdict(list)
                for row in rows.budget_admissions:
                    budgets[row["dependency"]].append((row["admitted_at"], row["retry"]))
                gates = [gate_from_row(row) for row in rows.gates]
                adaptive = [adaptive_from_row(row) for row in rows.adaptive]
        except DB_ERRORS as exc:
            raise StoreError(f"loading what the core is rebuilt from failed: {exc}") from exc
        return Snapshot(
            jobs=jobs,
            backlog=backlog,
            admissions=dict(admissions),
            unit_admissions=dict(charges),
            budget_admissions=dict(budgets),
            gates=gates,
            adaptive=adaptive,
            max_seq=max([*(job.seq for job in jobs), *(entry.max_seq for entry in backlog)], default=0),
        )

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

    async def job_states(self) -> dict[str, str]:
        """Every job's state (for the audit and operators), job_id -> state."""
        rows = await self._read("job_states", what="reading job states")
        return {row["job_id"]: row["state"] for row in rows}

    async def dead_jobs(self) -> list[DeadJob]:
        """Every dead job, in the order they died."""
        rows = await self._read("dead_jobs", what="reading the dead jobs", timeout=self.timeout)
        return [
            DeadJob(job_id=row["job_id"], dependency=row["dependency"], last_error=row["last_error"])
            for row in rows
        ]

    async def finished_count(self) -> int:
        """How many jobs have finished (succeeded or dead)."""
        row = await self._read_one("finished_count", what="counting finished jobs", timeout=self.timeout)
        return int(row["finished"]) if row is not None else 0

    # -- dead jobs --------------------------------------------------------------

    async def revive_requested(
        self, holder: uuid.UUID, epoch: int, now: float, configured: Sequence[str]
    ) -> list[Job]:
        """Apply every pending `janus jobs retry` request (leader only, fenced): the jobs revived."""
        try:
            async with asyncio.timeout(self.timeout), self._pool.acquire() as connection:
                if not await connection.fetchval(sql("retry_requests_pending")):
                    return []
        except DB_ERRORS as exc:
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
        except DB_ERRORS as exc:
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

    async def prune_finished(
        self,
        holder: uuid.UUID,
        epoch: int,
        *,
        state: JobState,
        dependency: str,
        before: float,
        limit: int,
        statement_timeout: float,
    ) -> int | None:
        """One fenced batch of retention pruning: the jobs deleted, or None if it ran past
        `statement_timeout` and was rolled back (the caller tries a smaller batch)."""
        try:
            async with self.leader_transaction(holder, epoch) as tx:
                return await tx.prune_finished(state, dependency, before, limit, statement_timeout)
        except StoreError as exc:
            if isinstance(exc.__cause__, asyncpg.QueryCanceledError):
                return None
            raise

    async def prune_records(
        self, holder: uuid.UUID, epoch: int, *, before: float, limit: int
    ) -> PrunedRecords:
        """One fenced batch: handled `janus jobs retry` requests and ended leader terms older
        than `before` (Unix seconds), at most `limit` of each."""
        async with self.leader_transaction(holder, epoch) as tx:
            return await tx.prune_records(before, limit)

    async def oldest_finished(self) -> list[OldestFinished]:
        """Per terminal state and dependency, when its oldest stored job finished."""
        rows = await self._read("oldest_finished", what="reading the oldest finished jobs")
        return [
            OldestFinished(state=JobState(r["state"]), dependency=r["dependency"], finished_at=r["oldest"])
            for r in rows
            if r["oldest"] is not None
        ]

    async def table_sizes(self, names: Sequence[str]) -> list[TableSize]:
        rows = await self._read("table_sizes", list(names), what="reading table sizes", timeout=self.timeout)
        return [TableSize(name=r["name"], live_rows=int(r["live_rows"]), bytes=int(r["bytes"])) for r in rows]

    async def autovacuum_on(self) -> bool:
        row = await self._read_one(
            "autovacuum_on", what="reading the autovacuum setting", timeout=self.timeout
        )
        return bool(row[0]) if row is not None else True

    async def table_churn(self, names: Sequence[str]) -> list[TableChurn]:
        rows = await self._read(
            "table_churn", list(names), what="reading table statistics", timeout=self.timeout
        )
        return [
            TableChurn(
                name=r["name"],
                live_rows=int(r["live_rows"]),
                dead_rows=int(r["dead_rows"]),
                changed_rows=int(r["changed_rows"]),
            )
            for r in rows
        ]

    async def vacuum(self, table: str) -> None:
        """VACUUM (ANALYZE) one of Janus's growing tables, outside any transaction. No deadline:
        on a large table it may take minutes, holding no lock that a tick or a renewal waits
        for; a database that stops answering is noticed by the lease's renewals."""
        try:
            async with self._pool.acquire(timeout=self.timeout) as connection:
                if table == "jobs":
                    await connection.execute(sql("vacuum_jobs"))
                elif table == "attempt_errors":
                    await connection.execute(sql("vacuum_attempt_errors"))
                elif table == "admissions":
                    await connection.execute(sql("vacuum_admissions"))
                elif table == "retry_requests":
                    await connection.execute(sql("vacuum_retry_requests"))
                elif table == "leader_terms":
                    await connection.execute(sql("vacuum_leader_terms"))
                else:
                    raise ValueError(f"no vacuum of {table!r}")
        except DB_ERRORS as exc:
            raise StoreError(f"vacuuming janus.{table} failed: {exc}") from exc

    async def prune_admissions(self, holder: uuid.UUID, epoch: int, before: float) -> int:
        async with self.leader_transaction(holder, epoch) as tx:
            return await tx.prune_admissions(before)

    async def who_leads(self) -> LeaseHolder | None:
        """Who holds the lease (None: nobody ever did), and from which host it connects."""
        try:
            async with asyncio.timeout(self.timeout), self._pool.acquire() as connection:
                row = await connection.fetchrow(sql("who_leads"))
        except DB_ERRORS as exc:
            raise StoreError(f"reading the lease failed: {exc}") from exc
        if row is None:
            return None
        return LeaseHolder(holder=row["holder"], epoch=row["epoch"], live=row["live"], address=row["address"])

    async def database_time(self) -> float:
        try:
            async with asyncio.timeout(self.timeout), self._pool.acquire() as connection:
                return float(await connection.fetchval(sql("database_time")))
        except DB_ERRORS as exc:
            raise StoreError(f"reading the database clock failed: {exc}") from exc
