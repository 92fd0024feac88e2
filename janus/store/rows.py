"""Between PostgreSQL's rows and Janus's values, and the errors asyncpg raises: the pieces the
store's modules share."""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg

from janus.core.adaptive import AdaptiveState, Signal
from janus.core.circuit import CircuitSnapshot, CircuitState
from janus.core.gates import GateState
from janus.core.jobs import Job, JobState
from janus.core.rebuild import Backlog

# What a lost, refused or hung database raises through asyncpg: all become StoreError here.
# InterfaceError covers a connection that died under us (ConnectionDoesNotExistError), and
# InternalClientError a connection left mid-operation by a cancelled statement.
DB_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class FailedAttempt:
    """One line of a job's error history."""

    job_id: str
    attempt: int
    failed_at: float
    error: str


def job_from_row(row: asyncpg.Record) -> Job:
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
        cost=row["cost"],
    )


def backlog_from_row(row: asyncpg.Record) -> Backlog:
    return Backlog(
        dependency=row["dependency"], scope=row["scope"], waiting=row["waiting"], max_seq=row["max_seq"]
    )


def adaptive_from_row(row: asyncpg.Record) -> AdaptiveState:
    return AdaptiveState(
        dependency=row["dependency"],
        rate=row["rate"],
        concurrency=row["concurrency"],
        slow_start=row["slow_start"],
        reason=row["reason"],
        changed_at=row["changed_at"],
        signal=Signal(row["signal"]) if row["signal"] is not None else None,
        concurrency_slow_start=row["concurrency_slow_start"],
        latency_floor=row["latency_floor"],
    )


def gate_from_row(row: asyncpg.Record) -> GateState:
    return GateState(
        dependency=row["dependency"],
        circuit=CircuitSnapshot(
            state=CircuitState(row["circuit_state"]),
            since=row["circuit_since"],
            open_until=row["open_until"],
            open_for=row["open_for"],
        ),
        pause_until=row["pause_until"],
    )


# SQLSTATE classes of errors about what a statement carried, not about the server or the
# connection: data exceptions, integrity violations, program limits (e.g. an index row too
# large), and errors raised by PL/pgSQL (triggers).
_DATA_ERROR_CLASSES = frozenset({"22", "23", "54", "P0"})


def refused_for_its_data(exc: asyncpg.PostgresError) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in _DATA_ERROR_CLASSES
