"""Retention: the leader deletes finished jobs past their retention, in small fenced batches.

A supervised task of the term, on pooled connections (never the tick's). Each batch is its
own transaction, fenced by the lease like every leader write: it locks the lease row FOR
SHARE, so a renewal or a takeover waits for it; batches therefore adapt their size to
`retention.batch_budget`, a statement past ten budgets is cancelled and retried smaller, and
the task rests as long as a batch took before the next one, leaving the database to the ticks.
What may go is decided by janus/core/retention.py; the store's statements select exactly that.

Deleted rows take room until VACUUM frees it. PostgreSQL's autovacuum does that (and keeps
the planner's statistics fresh) on a server where it is on, the default; where it is off,
the pruner stands in for it on Janus's own tables, with autovacuum's default thresholds,
or the database would grow whatever is pruned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from janus.api.metrics import Metrics
from janus.core.jobs import JobState
from janus.core.retention import PRUNED_STATES, BatchSizing, Retention, records_cutoff, vacuum_due
from janus.service.leadership import Term
from janus.store.repository import OldestFinished, Store

log = logging.getLogger("janus.retention")

# The tables that grow: with traffic (the first three), or with operators' retries and with
# takeovers (a process in a crash loop starts a term every few seconds).
TABLES = ("jobs", "attempt_errors", "admissions", "retry_requests", "leader_terms")
SIZES_EVERY = 60.0  # seconds between readings of the table sizes (cheap, but not per batch)
FIRST_BATCH = 100


@dataclass(kw_only=True)
class Pruner:
    store: Store
    term: Term
    retention: Retention
    sizing: BatchSizing
    every: float
    metrics: Metrics
    clock: Callable[[], float]
    size: int = FIRST_BATCH
    autovacuum: bool | None = None  # the server's setting, read at the first pass

    @property
    def statement_timeout(self) -> float:
        # Far above a normal batch, far below the lease: a slow one is cut off before it can
        # delay a renewal long enough to matter.
        return min(1.0, max(0.25, 10 * self.sizing.budget))

    async def run(self, draining: asyncio.Event) -> None:
        sizes_due = 0.0
        while not draining.is_set():
            await self.prune_once(draining)
            await self.prune_records(draining)
            await self.vacuum_if_due()
            if time.monotonic() >= sizes_due:
                await self.measure_tables()
                sizes_due = time.monotonic() + SIZES_EVERY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(draining.wait(), timeout=self.every)

    async def prune_once(self, draining: asyncio.Event | None = None) -> int:
        """One pass: for every state and dependency with jobs past retention, batches until
        none is left (or the term drains). Returns the jobs deleted."""
        oldest = await self.store.oldest_finished()
        total = 0
        for entry in oldest:
            before = self.retention.cutoff(entry.state, entry.dependency, self.clock())
            if entry.finished_at < before:
                total += await self._prune_until_done(entry.state, entry.dependency, before, draining)
        if total:
            log.debug("pruned %d finished jobs past their retention", total)
            oldest = await self.store.oldest_finished()  # what is left (one index probe each)
        self._report_oldest(oldest)
        return total

    async def _prune_until_done(
        self, state: JobState, dependency: str, before: float, draining: asyncio.Event | None
    ) -> int:
        total = 0
        while draining is None or not draining.is_set():
            limit = self.size
            started = time.monotonic()
            pruned = await self.store.prune_finished(
                self.term.holder,
                self.term.epoch,
                state=state,
                dependency=dependency,
                before=before,
                limit=limit,
                statement_timeout=self.statement_timeout,
            )
            elapsed = time.monotonic() - started
            self.size = self.sizing.next_size(limit, elapsed, timed_out=pruned is None)
            self.metrics.prune_batch.set(self.size)
            if pruned is None:
                log.warning("a pruning batch of %d jobs ran past %.2f s: trying smaller", limit, elapsed)
                if limit <= self.sizing.smallest:
                    return total  # the database is struggling: the next pass tries again
                continue
            total += pruned
            self.metrics.pruned.labels(state.value).inc(pruned)
            if pruned < limit:
                return total
            await asyncio.sleep(elapsed)  # the database's time, shared: as long resting as working
        return total

    async def prune_records(self, draining: asyncio.Event | None = None) -> int:
        """Handled retry requests and ended leader terms past the longest default retention, in
        batches of the current size until none is left. Returns the rows deleted."""
        before = records_cutoff(self.retention, self.clock())
        total = 0
        while draining is None or not draining.is_set():
            started = time.monotonic()
            pruned = await self.store.prune_records(
                self.term.holder, self.term.epoch, before=before, limit=self.size
            )
            self.metrics.pruned_records.labels("retry_requests").inc(pruned.retry_requests)
            self.metrics.pruned_records.labels("leader_terms").inc(pruned.leader_terms)
            total += pruned.total
            if max(pruned.retry_requests, pruned.leader_terms) < self.size:
                break
            await asyncio.sleep(time.monotonic() - started)  # as long resting as working
        return total

    def _report_oldest(self, oldest: list[OldestFinished]) -> None:
        now = self.clock()
        for state in PRUNED_STATES:
            times = [entry.finished_at for entry in oldest if entry.state is state]
            self.metrics.oldest_finished.labels(state.value).set(max(0.0, now - min(times)) if times else 0.0)

    async def vacuum_if_due(self) -> list[str]:
        """Where autovacuum is off: VACUUM (ANALYZE) each table past its thresholds. The tables vacuumed."""
        if self.autovacuum is None:
            self.autovacuum = await self.store.autovacuum_on()
            if not self.autovacuum:
                log.warning("autovacuum is off on this server: Janus vacuums its own tables")
        if self.autovacuum:
            return []
        vacuumed = []
        for churn in await self.store.table_churn(TABLES):
            if vacuum_due(churn):
                await self.store.vacuum(churn.name)
                vacuumed.append(churn.name)
        return vacuumed

    async def measure_tables(self) -> None:
        for table in await self.store.table_sizes(TABLES):
            self.metrics.table_rows.labels(table.name).set(table.live_rows)
            self.metrics.table_bytes.labels(table.name).set(table.bytes)
