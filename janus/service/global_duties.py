"""Member mode's work done once (docs/scale-out.md, "Work done once"): whoever holds the global
lease, janus.leader (any live member may: migration 0010's guard), prunes old admissions, runs
the retention Pruner, applies `janus jobs retry` requests, and forgets members and dependency
terms long gone. Every write of it is
fenced by that lease, as a single leader's are; losing the lease ends these duties only, never
the member's dependency terms."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

from janus.api.metrics import Metrics
from janus.config import JanusConfig
from janus.errors import LeadershipLost
from janus.service import leadership
from janus.service.leadership import LeaseTimings, Term
from janus.service.retention import Pruner
from janus.store.repository import Store

log = logging.getLogger("janus.members")

PRUNE_EVERY = 60.0
REVIVE_EVERY = 0.5  # as a single leader: how often `janus jobs retry` requests are looked for
MEMBERS_GONE_FOR = 3600.0  # a crashed member's row is kept this long (status shows it gone)
TERMS_KEPT_FOR = 7 * 86400.0  # ended dependency terms, as an audit trail
TERMS_BATCH = 1000


class GlobalDuties:
    def __init__(
        self,
        store: Store,
        holder: uuid.UUID,
        timings: LeaseTimings,
        config: Callable[[], JanusConfig],
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._holder = holder
        self._timings = timings
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self.holding = False

    async def run(self, done: asyncio.Event) -> None:
        """Stand by for the global lease, hold it and do the duties, until `done`."""
        while not done.is_set():
            term = await leadership.acquire(self._store, self._holder, self._timings, done)
            if term is None:
                return
            self.holding = True
            lost: BaseException | None = None
            try:
                async with asyncio.TaskGroup() as group:
                    renew = group.create_task(
                        leadership.keep(self._store, term, self._timings), name="global"
                    )
                    pruner = group.create_task(self._pruner(term).run(done), name="retention")
                    pruning = group.create_task(self._prune(term, done), name="prune-admissions")
                    reviving = group.create_task(self._revive(term, done), name="revive-dead-jobs")
                    await done.wait()
                    for task in (renew, pruner, pruning, reviving):
                        task.cancel()
            except* LeadershipLost as group:
                lost = group
            finally:
                self.holding = False
                if lost is None:
                    await leadership.release(self._store, term, timeout=1.0)
            if lost is not None:
                log.warning("the global lease (epoch %d) was lost: %s", term.epoch, lost)

    def _pruner(self, term: Term) -> Pruner:
        config = self._config()
        return Pruner(
            store=self._store,
            term=term,
            retention=config.retention_policies(),
            sizing=config.retention.sizing(),
            every=config.retention.prune_every,
            metrics=self._metrics,
            clock=self._clock,
        )

    async def _prune(self, term: Term, done: asyncio.Event) -> None:
        """Admissions older than every rate window of every dependency; members and terms long gone."""
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=PRUNE_EVERY)
                return
            policies = self._config().policies()
            longest = max((max(p.longest_window, p.retry.budget_window) for p in policies), default=0.0)
            keep_after = self._clock() - max(2 * longest, 3600.0)
            pruned = await self._store.prune_admissions(term.holder, term.epoch, keep_after)
            membership = self._store.membership
            gone = await membership.prune(MEMBERS_GONE_FOR)
            ended = await membership.prune_terms(self._clock() - TERMS_KEPT_FOR, TERMS_BATCH)
            if pruned or gone or ended:
                log.debug("pruned %d old admissions, %d members gone, %d ended terms", pruned, gone, ended)

    async def _revive(self, term: Term, done: asyncio.Event) -> None:
        """Apply `janus jobs retry` requests: dead jobs become waiting in PostgreSQL (fenced by
        the global lease); each owner's term rebuilds to take its own (member_steering.py)."""
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=REVIVE_EVERY)
                return
            configured = list(self._config().dependencies)
            revived = await self._store.revive_requested(term.holder, term.epoch, self._clock(), configured)
            if revived:
                log.info(
                    "made %d dead jobs eligible again (janus jobs retry); their owners rebuild", len(revived)
                )
