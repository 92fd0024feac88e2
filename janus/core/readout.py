"""What the shell reads out of the scheduler: the views that metrics, `/status`, `janus why` and
`janus scopes` show, and the changes since the last tick that the store persists with it.

A base of `Scheduler` (core/scheduler.py), over the state it keeps: reading never changes a
decision, except that asking at a later time moves the scheduler's clock, which never goes back.
"""

from __future__ import annotations

from collections import Counter

from janus.core import explain
from janus.core.adaptive import AdaptiveState, AdaptiveView
from janus.core.decisions import LaneLimits, LaneStats, ScopeStats, WaitReason, WhyWaiting
from janus.core.gates import GateEvent, GateState
from janus.core.jobs import Job, JobState
from janus.core.lane import Lane
from janus.core.recovery import RampView


class Readout:
    _lanes: dict[str, Lane]
    _jobs: dict[str, Job]
    # Decisions use a clock that never goes back: a backward jump must not let a pruned
    # admission leave a rate window it still belongs to.
    _clock_floor: float

    def job(self, job_id: str) -> Job | None:
        """A non-terminal job the core holds in memory (first attempts may be in the store only)."""
        return self._jobs.get(job_id)

    def stats(self) -> list[LaneStats]:
        return [explain.lane_stats(lane) for lane in self._lanes.values()]

    def limits(self, now: float) -> list[LaneLimits]:
        """Each dependency's limits, their use and what blocks it at `now`. The clock advances to
        `now` first: a window pruned at a time the admission has not reached yet would forget
        admissions it still counts."""
        now = self._advance(now)
        return [explain.lane_limits(lane, now) for lane in self._lanes.values()]

    def waiting_by_reason(self, dependency: str, now: float) -> Counter[WaitReason]:
        """The dependency's waiting jobs by what holds each back first (O(scopes)); advances the
        clock to `now` as `limits` does."""
        return explain.waiting_by_reason(self._lanes[dependency], self._advance(now))

    def lane_stats(self, dependency: str) -> LaneStats:
        return explain.lane_stats(self._lanes[dependency])

    def gate_states(self) -> list[GateState]:
        return [lane.gate.state() for lane in self._lanes.values()]

    def drain_shadow(self) -> dict[tuple[str, str], int]:
        """(dependency, shadow limit) -> admissions it would have held back since the last call."""
        return explain.drain_shadow(self._lanes)

    def shadow_totals(self, dependency: str) -> dict[str, int]:
        """Per shadow limit of the dependency, the admissions it would have held back in this term."""
        shadow = self._lanes[dependency].shadow
        return dict(shadow.total) if shadow is not None else {}

    def recovery_shares(self) -> dict[str, float]:
        """Per dependency: the share of its capacity its recovery ramp allows now (1.0: no ramp)."""
        return explain.recovery_shares(self._lanes, self._clock_floor)

    def recovery_views(self) -> dict[str, RampView]:
        """Per dependency whose recovery ramp is in force: its share, and what it is a share of."""
        now = self._clock_floor
        views = {
            name: lane.gate.ramp.view(now)
            for name, lane in self._lanes.items()
            if lane.gate.ramp.started is not None
        }
        return {name: view for name, view in views.items() if view is not None}

    def scopes_at_caps(self) -> dict[str, dict[str, tuple[WaitReason, str]]]:
        """Per dependency that has any, its scopes held back by a cap of their own now, each
        with that cap (SCOPE_RATE, "scope rate 5/1s"), in the order they reached it. O(lanes)
        when none is: `janus simulate` asks at every tick."""
        return {name: dict(lane.capped) for name, lane in self._lanes.items() if lane.capped}

    def retry_budget_parked(self) -> dict[str, int]:
        """Per dependency: scopes whose next job is a retry waiting for the retry budget."""
        return {name: len(lane.retry_parked) for name, lane in self._lanes.items()}

    def adaptive_views(self) -> dict[str, AdaptiveView]:
        """Per dependency with adaptive limits: the limits in force and what moved them last."""
        return {name: lane.adaptive.view() for name, lane in self._lanes.items() if lane.adaptive is not None}

    def drain_adaptive(self) -> list[AdaptiveState]:
        """Adaptive limits changed since the last call (to persist with the tick)."""
        return [state for lane in self._lanes.values() if (state := lane.drain_adaptive()) is not None]

    def drain_gates(self) -> tuple[list[GateState], list[GateEvent]]:
        """Gate states changed since the last call (to persist with the tick), and what happened."""
        states: list[GateState] = []
        events: list[GateEvent] = []
        for lane in self._lanes.values():
            state, happened = lane.gate.drain()
            if state is not None:
                states.append(state)
            events.extend(happened)
        return states, events

    def scope_stats(self, dependency: str, *, top: int | None = None) -> list[ScopeStats]:
        """Per scope, the largest backlogs first (`top` of them; O(scopes))."""
        return explain.scope_stats(self._lanes[dependency], top)

    def scope_names(self, dependency: str) -> list[str]:
        """The names of the scopes the lane knows now (a copy: ranking them may take several steps)."""
        return list(self._lanes[dependency].scopes)

    def scope_backlogs(self, dependency: str, names: list[str]) -> list[tuple[int, str]]:
        """(waiting, name) of each named scope still known (O(len(names)))."""
        return explain.scope_backlogs(self._lanes[dependency], names)

    def scope_stats_of(self, dependency: str, names: list[str]) -> list[ScopeStats]:
        """ScopeStats of each named scope still known, in the order given (O(len(names)))."""
        return explain.scope_stats_of(self._lanes[dependency], names)

    def oldest_waiting_since(self, dependency: str) -> float | None:
        """eligible_at of the dependency's oldest eligible job in memory (O(scopes))."""
        return explain.oldest_waiting_since(self._lanes[dependency])

    def why(self, job_id: str, now: float) -> list[WhyWaiting] | None:
        """Why a job held in memory waits, most immediate reason first; None if not waiting."""
        job = self._jobs.get(job_id)
        if job is None or job.state is not JobState.WAITING:
            return None
        return explain.why_job(self._lanes[job.dependency], job, max(now, self._clock_floor))

    def in_memory_ahead(self, dependency: str, scope: str) -> int:
        """Jobs of a scope in memory that go before any of its first attempts still in the store."""
        return explain.in_memory_ahead(self._lanes[dependency], scope)

    def lane_blocks(self, dependency: str, now: float) -> list[WhyWaiting]:
        """What holds a dependency's waiting jobs back: its own limits and gates, and how many
        scopes a cap of their own holds (the same reasons `why_scope` gives per scope)."""
        return explain.lane_blocks(self._lanes[dependency], max(now, self._clock_floor))

    def why_scope(
        self, dependency: str, scope_name: str, now: float, *, ahead_in_scope: int = 0
    ) -> list[WhyWaiting]:
        """Why the next job of a scope (behind `ahead_in_scope` others of its scope) waits."""
        lane = self._lanes[dependency]
        return explain.why_scope(lane, scope_name, max(now, self._clock_floor), ahead_in_scope=ahead_in_scope)

    def _advance(self, now: float) -> float:
        if now > self._clock_floor:
            self._clock_floor = now
        return self._clock_floor
