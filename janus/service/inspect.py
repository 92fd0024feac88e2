"""Answers to "which scopes wait" and "why does this job wait", from the leader's live core.

Only the leader knows the fair queue, the caps and the windows as they are now, so the
questions go to it (over HTTP, see janus/api/http.py; the CLI's `janus scopes` and
`janus why` ask there). Everything here runs on the event loop, between ticks.

`/scopes` is answered from a `ScopesSnapshot`: the leader ranks its scopes in slices of
`SCAN_SLICE`, yielding to the loop between them, so a lane of 50,000 scopes never holds the
loop (the tick, the lease renewal) for more than a slice; the HTTP side decides how often a
snapshot may be taken (janus/api/scopes_cache.py), never a client.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable
from typing import Any

from janus.api.inspection import Answer, NotLeading, ScopesSnapshot
from janus.core.decisions import ScopeStats, WhyWaiting
from janus.core.scheduler import Scheduler
from janus.store.repository import Store

SNAPSHOT_DEPTH = 1000  # scopes a snapshot keeps per dependency, largest backlogs first
SCAN_SLICE = 2000  # scopes ranked per step of the loop


def _reasons(reasons: list[WhyWaiting]) -> list[dict[str, Any]]:
    return [{"reason": r.reason.value, "detail": r.detail, "until": r.until} for r in reasons]


def _scope(stats: ScopeStats, now: float) -> dict[str, Any]:
    since = stats.oldest_waiting_since
    return {
        "scope": stats.scope,
        "waiting": stats.waiting,
        "held": stats.held,
        "admitted": stats.admitted,
        "oldest_waiting_seconds": max(0.0, now - since) if since is not None else None,
    }


class Inspector:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.scheduler: Scheduler | None = None  # set while this process leads
        self._store: Store | None = None

    def attach(self, scheduler: Scheduler, store: Store) -> None:
        self.scheduler, self._store = scheduler, store

    def detach(self) -> None:
        self.scheduler, self._store = None, None

    def _leading(self) -> Scheduler:
        if self.scheduler is None:
            raise NotLeading()
        return self.scheduler

    def scopes(self, dependency: str | None, top: int, offset: int = 0) -> Answer:
        """The /scopes body at once, in one step of the loop (for tests and small lanes)."""
        scheduler = self._leading()
        if dependency is not None and not scheduler.knows(dependency):
            return False, {"error": f"unknown dependency {dependency!r}"}
        now = self._clock()
        names = [dependency] if dependency is not None else list(scheduler.policies)
        lanes = {name: self._lane(scheduler, name, now) for name in names}
        scopes = {
            name: [_scope(s, now) for s in scheduler.scope_stats(name, top=offset + top)] for name in names
        }
        snapshot = ScopesSnapshot(taken_at=now, cost=0.0, depth=offset + top, lanes=lanes, scopes=scopes)
        return snapshot.answer(dependency, top, offset)

    async def snapshot(self, depth: int = SNAPSHOT_DEPTH) -> ScopesSnapshot:
        """Every dependency's figures and `depth` largest backlogs, ranked slice by slice."""
        scheduler = self._leading()
        now = self._clock()
        cost = 0.0
        lanes: dict[str, dict[str, Any]] = {}
        scopes: dict[str, list[dict[str, Any]]] = {}
        for name in list(scheduler.policies):
            started = time.perf_counter()
            lanes[name] = self._lane(scheduler, name, now)
            every = scheduler.scope_names(name)
            ranked: list[tuple[int, str]] = []
            for start in range(0, len(every), SCAN_SLICE):
                if start:  # yield between slices: the tick and the lease renewal go first
                    cost += time.perf_counter() - started
                    await asyncio.sleep(0)
                    started = time.perf_counter()
                    if self.scheduler is not scheduler:  # the term ended, or the core was rebuilt
                        scheduler = self._leading()
                        return await self.snapshot(depth)
                ranked = heapq.nlargest(
                    depth, [*ranked, *scheduler.scope_backlogs(name, every[start : start + SCAN_SLICE])]
                )
            chosen = [scope for _, scope in ranked]
            scopes[name] = [_scope(s, now) for s in scheduler.scope_stats_of(name, chosen)]
            cost += time.perf_counter() - started
            await asyncio.sleep(0)
            if self.scheduler is not scheduler:
                scheduler = self._leading()
                return await self.snapshot(depth)
        return ScopesSnapshot(taken_at=now, cost=cost, depth=depth, lanes=lanes, scopes=scopes)

    @staticmethod
    def _lane(scheduler: Scheduler, name: str, now: float) -> dict[str, Any]:
        lane = scheduler.lane_stats(name)
        return {
            "dependency": name,
            "eligible_scopes": lane.scopes,
            "ready": lane.ready,
            "stored": lane.stored,
            "delayed": lane.delayed,
            "held": lane.held,
            "blocked": _reasons(scheduler.lane_blocks(name, now)),
        }

    async def why(self, job_id: str) -> Answer:
        scheduler = self._leading()
        store = self._store
        assert store is not None
        now = self._clock()
        reasons = scheduler.why(job_id, now)
        if reasons is not None:
            job = scheduler.job(job_id)
            assert job is not None
            return True, {
                "job_id": job_id,
                "state": job.state.value,
                "dependency": job.dependency,
                "scope": job.scope,
                "failures": job.failures,
                "waits_for": _reasons(reasons),
            }
        position = await store.job_position(job_id)
        if position is None:
            return False, {"error": f"no job {job_id!r}"}
        body: dict[str, Any] = {
            "job_id": job_id,
            "state": position.state.value,
            "dependency": position.dependency,
            "scope": position.scope,
            "failures": position.failures,
            "last_error": position.last_error,
        }
        if position.state.value == "waiting" and scheduler.knows(position.dependency):
            ahead = (position.ahead_in_scope or 0) + scheduler.in_memory_ahead(
                position.dependency, position.scope
            )
            # The state may have moved on between the two reads; the answer is as of `now`.
            body["waits_for"] = _reasons(
                scheduler.why_scope(position.dependency, position.scope, now, ahead_in_scope=ahead)
            )
        elif position.state.value == "waiting":
            body["waits_for"] = [
                {
                    "reason": "unconfigured",
                    "detail": "its dependency is not in the configuration",
                    "until": None,
                }
            ]
        return True, body
