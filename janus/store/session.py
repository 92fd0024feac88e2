"""The leader's own connection for a term: the admission tick's statements, fenced by the lease,
the pages of stored first attempts, and what the store knows of results the core could not apply."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg

from janus.core.adaptive import AdaptiveState
from janus.core.decisions import PageRequest
from janus.core.gates import GateState
from janus.core.jobs import Admission, Job, JobState
from janus.core.outbox import OutboxMessage
from janus.core.repeats import StoredAttempt
from janus.errors import LeadershipLost, StatementRefused, StoreError
from janus.store.queries import bind, sql
from janus.store.rows import DB_ERRORS, FailedAttempt, job_from_row, refused_for_its_data


@dataclass(frozen=True, kw_only=True, slots=True)
class TickParams:
    """The `tick` statement's parameters, by the names queries.sql gives them: one array per column."""

    holder: uuid.UUID
    epoch: int
    now: float
    # New jobs, in their latest state (perhaps already admitted).
    new_job_ids: list[str]
    new_dependencies: list[str]
    new_scopes: list[str]
    new_payloads: list[str | None]  # JSON text
    new_states: list[str]
    new_attempts: list[int]
    new_eligible_at: list[float]
    new_admitted_at: list[float | None]
    new_expires_at: list[float | None]
    new_lease_deadlines: list[float | None]
    new_seqs: list[int]
    new_costs: list[float]
    # Jobs already stored, changed.
    changed_job_ids: list[str]
    changed_states: list[str]
    changed_attempts: list[int]
    changed_failures: list[int]
    changed_eligible_at: list[float]
    changed_admitted_at: list[float | None]
    changed_expires_at: list[float | None]
    changed_lease_deadlines: list[float | None]
    changed_last_errors: list[str | None]
    changed_finished_at: list[float | None]
    # Admissions.
    admitted_job_ids: list[str]
    admitted_attempts: list[int]
    admitted_dependencies: list[str]
    admitted_scopes: list[str]
    admitted_at: list[float]
    admitted_retries: list[bool]
    admitted_units: list[float]
    # Outcomes of the jobs this tick finishes (the outbox: published after the commit).
    outbox_ids: list[str]
    outbox_job_ids: list[str]
    outbox_routing_keys: list[str]
    outbox_bodies: list[str]
    # Member mode: the dependencies' leases the transaction locked first, and their epochs.
    fenced: bool = False
    fenced_dependencies: list[str] = field(default_factory=list)
    fenced_epochs: list[int] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        holder: uuid.UUID,
        epoch: int,
        now: float,
        new: Sequence[tuple[Job, str | None]],
        updated: Sequence[Job],
        admissions: Sequence[Admission],
        outbox: Sequence[OutboxMessage] = (),
        fenced: Mapping[str, int] | None = None,
    ) -> TickParams:
        jobs = [job for job, _ in new]
        names = sorted(fenced) if fenced is not None else []
        return cls(
            holder=holder,
            epoch=epoch,
            now=now,
            new_job_ids=[j.job_id for j in jobs],
            new_dependencies=[j.dependency for j in jobs],
            new_scopes=[j.scope for j in jobs],
            new_payloads=[payload for _, payload in new],
            new_states=[j.state.value for j in jobs],
            new_attempts=[j.attempt for j in jobs],
            new_eligible_at=[j.eligible_at for j in jobs],
            new_admitted_at=[j.admitted_at for j in jobs],
            new_expires_at=[j.expires_at for j in jobs],
            new_lease_deadlines=[j.lease_deadline for j in jobs],
            new_seqs=[j.seq for j in jobs],
            new_costs=[j.cost for j in jobs],
            changed_job_ids=[j.job_id for j in updated],
            changed_states=[j.state.value for j in updated],
            changed_attempts=[j.attempt for j in updated],
            changed_failures=[j.failures for j in updated],
            changed_eligible_at=[j.eligible_at for j in updated],
            changed_admitted_at=[j.admitted_at for j in updated],
            changed_expires_at=[j.expires_at for j in updated],
            changed_lease_deadlines=[j.lease_deadline for j in updated],
            changed_last_errors=[j.last_error for j in updated],
            changed_finished_at=[j.finished_at for j in updated],
            admitted_job_ids=[a.job_id for a in admissions],
            admitted_attempts=[a.attempt for a in admissions],
            admitted_dependencies=[a.dependency for a in admissions],
            admitted_scopes=[a.scope for a in admissions],
            admitted_at=[a.admitted_at for a in admissions],
            admitted_retries=[a.retry for a in admissions],
            admitted_units=[a.cost for a in admissions],
            outbox_ids=[m.id for m in outbox],
            outbox_job_ids=[m.job_id for m in outbox],
            outbox_routing_keys=[m.routing_key for m in outbox],
            outbox_bodies=[m.body.decode() for m in outbox],
            fenced=fenced is not None,
            fenced_dependencies=names,
            fenced_epochs=[fenced[n] for n in names] if fenced is not None else [],
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Settlement:
    """A result's actual cost, to write in place of its admission's estimate (core/units.py); or 0
    for an admission returned unused (`reported` False: the job keeps no actual cost)."""

    job_id: str
    attempt: int
    dependency: str
    admitted_at: float
    cost: float
    reported: bool = True


@dataclass(frozen=True, kw_only=True, slots=True)
class SettleParams:
    """The `tick_settle_costs` statement's parameters, by name: one array per column."""

    settled_job_ids: list[str]
    settled_attempts: list[int]
    settled_dependencies: list[str]
    settled_admitted_at: list[float]
    settled_costs: list[float]
    settled_reported: list[bool]

    @classmethod
    def of(cls, settled: Sequence[Settlement]) -> SettleParams:
        return cls(
            settled_job_ids=[s.job_id for s in settled],
            settled_attempts=[s.attempt for s in settled],
            settled_dependencies=[s.dependency for s in settled],
            settled_admitted_at=[s.admitted_at for s in settled],
            settled_costs=[s.cost for s in settled],
            settled_reported=[s.reported for s in settled],
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryControlParams:
    """The `tick_retry_control` statement's parameters, by name: one array per column."""

    now: float
    failed_job_ids: list[str]
    failed_attempts: list[int]
    failed_at: list[float]
    failed_errors: list[str]
    gate_dependencies: list[str]
    circuit_states: list[str]
    circuit_since: list[float | None]
    open_until: list[float | None]
    open_for: list[float | None]
    pause_until: list[float | None]

    @classmethod
    def of(
        cls, now: float, failed: Sequence[FailedAttempt], gates: Sequence[GateState]
    ) -> RetryControlParams:
        return cls(
            now=now,
            failed_job_ids=[f.job_id for f in failed],
            failed_attempts=[f.attempt for f in failed],
            failed_at=[f.failed_at for f in failed],
            failed_errors=[f.error for f in failed],
            gate_dependencies=[g.dependency for g in gates],
            circuit_states=[g.circuit.state.value for g in gates],
            circuit_since=[g.circuit.since for g in gates],
            open_until=[g.circuit.open_until for g in gates],
            open_for=[g.circuit.open_for for g in gates],
            pause_until=[g.pause_until for g in gates],
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class AdaptiveParams:
    """The `tick_adaptive` statement's parameters, by name: one array per column."""

    now: float
    adaptive_dependencies: list[str]
    rates: list[float | None]
    concurrencies: list[float | None]
    slow_starts: list[bool]
    reasons: list[str]
    changed_at: list[float]
    signals: list[str | None]
    concurrency_slow_starts: list[bool]
    latency_floors: list[float | None]

    @classmethod
    def of(cls, now: float, states: Sequence[AdaptiveState]) -> AdaptiveParams:
        return cls(
            now=now,
            adaptive_dependencies=[a.dependency for a in states],
            rates=[a.rate for a in states],
            concurrencies=[a.concurrency for a in states],
            slow_starts=[a.slow_start for a in states],
            reasons=[a.reason for a in states],
            changed_at=[a.changed_at for a in states],
            signals=[a.signal.value if a.signal is not None else None for a in states],
            concurrency_slow_starts=[a.concurrency_slow_start for a in states],
            latency_floors=[a.latency_floor for a in states],
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class TickWrite:
    """What writing one tick did: the new jobs stored, and the round trip of its statements
    (commit included), None when the tick had nothing to write and sent no statement."""

    inserted: set[str]
    seconds: float | None


class LeaderSession:
    """The leader's own connection for a term: one statement per admission tick.

    Held for the whole term rather than taken from the pool per tick, so that no tick
    pays for the pool's connection reset, and the tick statement stays prepared.
    """

    def __init__(
        self,
        connection: asyncpg.Connection,
        holder: uuid.UUID,
        epoch: int,
        timeout: float = 5.0,
        fenced: Mapping[str, int] | None = None,
    ) -> None:
        self._connection = connection
        self._holder = holder
        self._epoch = epoch
        self._timeout = timeout
        # Member mode (docs/scale-out.md): the dependencies this term leads and their epochs.
        # Every tick then locks their lease rows first, and janus.leader plays no part.
        self._fenced = dict(fenced) if fenced is not None else None

    async def write_tick(
        self,
        now: float,
        new: Sequence[tuple[Job, str | None]],
        updated: Sequence[Job],
        admissions: Sequence[Admission],
        *,
        failed: Sequence[FailedAttempt] = (),
        gates: Sequence[GateState] = (),
        outbox: Sequence[OutboxMessage] = (),
        adaptive: Sequence[AdaptiveState] = (),
        settled: Sequence[Settlement] = (),
    ) -> TickWrite:
        """Write one tick atomically, fenced by the lease: the ids of the new jobs stored, and the
        time its statements took -- timed here, where it is decided whether any is sent at all.

        `new` pairs each submitted job (in its latest state) with its payload as JSON text.
        A submitted job whose id the store already had is not written, nor its admission.
        A tick that failed attempts or changed a dependency's gates writes them too, in the
        same transaction (a second statement only then: most ticks have neither), and so do
        changed adaptive limits and the actual costs results reported (`settled`).
        `outbox`: the outcomes of the jobs it finishes, kept until the broker confirms them.
        """
        if not (new or updated or admissions or failed or gates or adaptive or settled):
            return TickWrite(inserted=set(), seconds=None)  # a set of its own: callers may change it
        writing = time.perf_counter()
        inserted = await self._write(now, new, updated, admissions, failed, gates, outbox, adaptive, settled)
        return TickWrite(inserted=inserted, seconds=time.perf_counter() - writing)

    async def _write(
        self,
        now: float,
        new: Sequence[tuple[Job, str | None]],
        updated: Sequence[Job],
        admissions: Sequence[Admission],
        failed: Sequence[FailedAttempt],
        gates: Sequence[GateState],
        outbox: Sequence[OutboxMessage],
        adaptive: Sequence[AdaptiveState],
        settled: Sequence[Settlement],
    ) -> set[str]:
        try:
            if not (failed or gates or adaptive or settled or self._fenced is not None):
                return await self._tick(now, new, updated, admissions, outbox)
            async with self._connection.transaction():
                await self._fence()
                inserted = await self._tick(now, new, updated, admissions, outbox)
                if failed or gates:
                    await self._connection.fetchrow(
                        sql("tick_retry_control"),
                        *bind("tick_retry_control", RetryControlParams.of(now, failed, gates)),
                        timeout=self._timeout,
                    )
                if adaptive:
                    await self._connection.execute(
                        sql("tick_adaptive"),
                        *bind("tick_adaptive", AdaptiveParams.of(now, adaptive)),
                        timeout=self._timeout,
                    )
                if settled:
                    await self._connection.fetchrow(
                        sql("tick_settle_costs"),
                        *bind("tick_settle_costs", SettleParams.of(settled)),
                        timeout=self._timeout,
                    )
                return inserted
        except DB_ERRORS as exc:
            raise StoreError(f"admission tick failed: {exc}") from exc

    async def _fence(self) -> None:
        """Member mode: lock this term's dependency leases (share) until the transaction ends, so
        no claim commits before it; LeadershipLost if one is no longer ours in its epoch."""
        if self._fenced is None:
            return
        names = sorted(self._fenced)
        rows = await self._connection.fetch(
            sql("fence_dependencies"),
            self._holder,
            names,
            [self._fenced[n] for n in names],
            timeout=self._timeout,
        )
        lost = sorted(set(names) - {row["dependency"] for row in rows})
        if lost:
            raise LeadershipLost(f"no longer leading {', '.join(lost)}: the tick wrote nothing")

    async def _tick(
        self,
        now: float,
        new: Sequence[tuple[Job, str | None]],
        updated: Sequence[Job],
        admissions: Sequence[Admission],
        outbox: Sequence[OutboxMessage],
    ) -> set[str]:
        params = TickParams.of(self._holder, self._epoch, now, new, updated, admissions, outbox, self._fenced)
        try:
            row = await self._connection.fetchrow(sql("tick"), *bind("tick", params), timeout=self._timeout)
        except asyncpg.PostgresError as exc:
            if refused_for_its_data(exc):
                raise StatementRefused(f"PostgreSQL refused the admission tick: {exc}") from exc
            raise StoreError(f"admission tick failed: {exc}") from exc
        except asyncpg.InterfaceError as exc:
            if isinstance(exc, ValueError):  # asyncpg's client-side DataError: an argument it cannot encode
                raise StatementRefused(
                    f"an argument of the admission tick could not be encoded: {exc}"
                ) from exc
            raise StoreError(f"admission tick failed: {exc}") from exc
        except DB_ERRORS as exc:
            raise StoreError(f"admission tick failed: {exc}") from exc
        assert row is not None
        if row["leading"] == 0:
            raise LeadershipLost(f"lease for epoch {self._epoch} is no longer held: the tick wrote nothing")
        if row["updated"] != len(updated):
            # Every changed job was stored by an earlier tick; a miss means the core and the
            # database disagree, and only a rebuild from the database can settle it.
            raise StoreError(f"tick updated {row['updated']} of {len(updated)} changed jobs")
        return set(row["inserted"])

    async def maybe_sent(self) -> list[tuple[str, int, float]]:
        """(job_id, attempt, lease_deadline) of each admitted job whose admission the broker may
        never have had: no confirm of its tick was recorded (sql/outbox.sql)."""
        try:
            dependencies = sorted(self._fenced) if self._fenced is not None else None
            rows = await self._connection.fetch(sql("maybe_sent"), dependencies, timeout=self._timeout)
        except DB_ERRORS as exc:
            raise StoreError(f"looking up unconfirmed admissions failed: {exc}") from exc
        return [(row["job_id"], row["attempt"], row["lease_deadline"]) for row in rows]

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
        except DB_ERRORS as exc:
            raise StoreError(f"paging waiting jobs failed: {exc}") from exc
        pages: list[list[Job]] = [[] for _ in requests]
        for row in rows:
            pages[row["ord"] - 1].append(job_from_row(row))
        return pages

    async def job_dependencies(self, job_ids: Sequence[str]) -> dict[str, str]:
        """The dependency of each of `job_ids` the store has."""
        if not job_ids:
            return {}
        try:
            rows = await self._connection.fetch(sql("job_dependencies"), list(job_ids), timeout=self._timeout)
        except DB_ERRORS as exc:
            raise StoreError(f"looking up jobs' dependencies failed: {exc}") from exc
        return {row["job_id"]: row["dependency"] for row in rows}

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
        except DB_ERRORS as exc:
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
