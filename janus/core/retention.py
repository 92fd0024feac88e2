"""Retention: which finished jobs may leave the database, and how big a pruning batch is.

A stored job is Janus's idempotency record (a repeated `job_id` is a duplicate while its row
exists), so what is pruned decides the de-duplication window too: a row is kept at least
max(its state's retention, `dedup_window`) after it finished, and never while unfinished.
The store selects by these cutoffs; the predicate is the specification the tests hold it to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from janus.core.jobs import JobState

PRUNED_STATES: tuple[JobState, ...] = (JobState.SUCCEEDED, JobState.DEAD)


@dataclass(frozen=True, kw_only=True, slots=True)
class RetentionPolicy:
    """Seconds a finished job is kept, by its terminal state; `dedup_window` is the promise to
    producers: a repeat within it of a finished job's id is always a duplicate."""

    succeeded: float
    dead: float
    dedup_window: float

    def __post_init__(self) -> None:
        if min(self.succeeded, self.dead, self.dedup_window) <= 0:
            raise ValueError("retention periods must be positive")

    def keep_for(self, state: JobState) -> float:
        """How long after finishing a job in `state` stays; unfinished states have no end."""
        if state is JobState.SUCCEEDED:
            return max(self.succeeded, self.dedup_window)
        if state is JobState.DEAD:
            return max(self.dead, self.dedup_window)
        raise ValueError(f"a {state.value} job is never pruned")


@dataclass(frozen=True, kw_only=True, slots=True)
class Retention:
    """The default policy, and the dependencies that override it."""

    default: RetentionPolicy
    overrides: Mapping[str, RetentionPolicy] = field(default_factory=lambda: MappingProxyType({}))

    def of(self, dependency: str) -> RetentionPolicy:
        return self.overrides.get(dependency, self.default)

    def cutoff(self, state: JobState, dependency: str, now: float) -> float:
        """Jobs of `dependency` in `state` that finished strictly before this may be pruned."""
        return now - self.of(dependency).keep_for(state)


def records_cutoff(retention: Retention, now: float) -> float:
    """The leader's own records (handled `janus jobs retry` requests, ended leader terms) that
    date from before this may be pruned: they are kept as long as the longest default retention,
    so the record of what was done to a stored job lasts as long as the job."""
    default = retention.default
    return now - max(default.keep_for(JobState.SUCCEEDED), default.keep_for(JobState.DEAD))


def prunable(
    retention: Retention, *, state: JobState, dependency: str, finished_at: float | None, now: float
) -> bool:
    """May this stored job be deleted now? Only a finished job past its state's retention."""
    if not state.terminal or finished_at is None:
        return False
    return finished_at < retention.cutoff(state, dependency, now)


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchSizing:
    """Batches grow while they take well under `budget` seconds and shrink when over it, so a
    pruning transaction (which holds the lease row FOR SHARE, like a tick) stays short
    whatever the rows cost on this database."""

    budget: float
    smallest: int = 10
    largest: int = 10_000

    def next_size(self, size: int, elapsed: float, *, timed_out: bool = False) -> int:
        if timed_out or elapsed > self.budget:
            size //= 2
        elif elapsed < self.budget / 2:
            size *= 2
        return max(self.smallest, min(self.largest, size))


@dataclass(frozen=True, kw_only=True, slots=True)
class TableChurn:
    """What PostgreSQL's statistics say of a table: what autovacuum would decide by."""

    name: str
    live_rows: int
    dead_rows: int
    changed_rows: int  # inserted, updated or deleted since the last ANALYZE


def vacuum_due(churn: TableChurn) -> bool:
    """PostgreSQL's default autovacuum thresholds: dead rows past 50 + 20 % of the live ones,
    or changes past 50 + 10 % (ANALYZE, so that plans follow the table's growth)."""
    return churn.dead_rows > 50 + 0.2 * churn.live_rows or churn.changed_rows > 50 + 0.1 * churn.live_rows
