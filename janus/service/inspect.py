"""Answers to "which scopes wait" and "why does this job wait", from the leader's live core.

Only the leader knows the fair queue, the caps and the windows as they are now, so the
questions go to it (over HTTP, see janus/api/http.py; the CLI's `janus scopes` and
`janus why` ask there). Everything here runs on the event loop, between ticks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from janus.core.decisions import WhyWaiting
from janus.core.scheduler import Scheduler
from janus.store.repository import Store

Answer = tuple[bool, dict[str, Any]]


def _reasons(reasons: list[WhyWaiting]) -> list[dict[str, Any]]:
    return [{"reason": r.reason.value, "detail": r.detail, "until": r.until} for r in reasons]


def _steering(scheduler: Scheduler, dependency: str) -> dict[str, Any]:
    """An operator's pause and override of the dependency, and whether it was removed from the policy."""
    steering = scheduler.steering(dependency)
    pause, override = steering.pause, steering.override
    return {
        "paused_by": pause.by if pause is not None else None,
        "paused_until": pause.until if pause is not None else None,
        "overridden_by": override.by if override is not None else None,
        "override": override.describe() if override is not None else None,
        "override_until": override.until if override is not None else None,
        "removed": dependency in scheduler.removed,
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

    def scopes(self, dependency: str | None, top: int) -> Answer:
        scheduler = self.scheduler
        if scheduler is None:
            return False, {"error": "not the leader: ask the process that leads"}
        now = self._clock()
        names = [dependency] if dependency is not None else list(scheduler.policies)
        unknown = [name for name in names if not scheduler.knows(name)]
        if unknown:
            return False, {"error": f"unknown dependency {unknown[0]!r}"}
        lanes = {stats.dependency: stats for stats in scheduler.stats()}
        body: dict[str, Any] = {"dependencies": []}
        for name in names:
            lane = lanes[name]
            body["dependencies"].append(
                {
                    "dependency": name,
                    "eligible_scopes": lane.scopes,
                    "ready": lane.ready,
                    "stored": lane.stored,
                    "delayed": lane.delayed,
                    "held": lane.held,
                    "blocked": _reasons(scheduler.lane_blocks(name, now)),
                    "steering": _steering(scheduler, name),
                    "shadow_held_back": scheduler.shadow_totals(name),
                    "scopes": [
                        {
                            "scope": s.scope,
                            "waiting": s.waiting,
                            "held": s.held,
                            "admitted": s.admitted,
                            "oldest_waiting_seconds": (
                                max(0.0, now - s.oldest_waiting_since)
                                if s.oldest_waiting_since is not None
                                else None
                            ),
                        }
                        for s in scheduler.scope_stats(name, top=top)
                    ],
                }
            )
        return True, body

    async def why(self, job_id: str) -> Answer:
        scheduler, store = self.scheduler, self._store
        if scheduler is None or store is None:
            return False, {"error": "not the leader: ask the process that leads"}
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
