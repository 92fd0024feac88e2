"""Answers for operators, from a lane as it is now: why a job or a scope waits, and the figures
of each dependency and scope (`janus why`, `janus scopes`, the metrics). Reads only."""

from __future__ import annotations

import functools
import heapq
from collections import Counter
from collections.abc import Mapping

from janus.core.decisions import LaneLimits, LaneStats, RateUse, ScopeStats, WaitReason, WhyWaiting
from janus.core.jobs import Job
from janus.core.lane import Lane
from janus.core.policy import RateLimit
from janus.core.scope import Scope


def why_job(lane: Lane, job: Job, now: float) -> list[WhyWaiting]:
    """Why a waiting job held in memory waits, most immediate reason first (`now`: the core's clock)."""
    scope = lane.scopes[job.scope]
    if job.eligible_at > now:
        return [
            WhyWaiting(
                reason=WaitReason.BACKOFF,
                detail=f"retry {job.failures + 1} after {job.failures} failed attempts",
                until=job.eligible_at,
            )
        ]
    job_id = job.job_id
    queue = scope.fresh if job.attempt == 0 else scope.again
    ahead = queue.index(job_id) if job_id in queue else 0
    if job.attempt == 0:
        ahead += len(scope.again)  # a simplification: retries may also go first
    return why_scope(lane, job.scope, now, ahead_in_scope=ahead)


def _blocked(lane: Lane, now: float) -> list[WhyWaiting]:
    """What holds the whole dependency back at `now`, as a reason of `why` (none, or one)."""
    block = lane.block(now)
    if block is None:
        return []
    # A unit limit: how many units it holds and how many must free for the job whose turn it is.
    units = lane.units.detail(now) if lane.units is not None and block.reason is WaitReason.RATE else None
    return [WhyWaiting(reason=block.reason, detail=units or block.limit, until=block.until)]


def why_scope(lane: Lane, scope_name: str, now: float, *, ahead_in_scope: int = 0) -> list[WhyWaiting]:
    """Why the next job of a scope (behind `ahead_in_scope` others of its scope) waits."""
    reasons = _blocked(lane, now)
    scope = lane.scopes.get(scope_name)
    if scope is not None:
        cap = lane.scope_cap(scope, now)
        if cap is not None:
            reasons.append(WhyWaiting(reason=cap[0], detail=cap[1], until=cap[2]))
        elif scope.parked is WaitReason.RETRY_BUDGET:
            reasons.append(
                WhyWaiting(
                    reason=WaitReason.RETRY_BUDGET,
                    detail="the dependency's retries are over budget",
                    until=lane.gate.retry_free_at(now),
                )
            )
        if scope.paging or (scope.stored and not scope.fresh):
            reasons.append(WhyWaiting(reason=WaitReason.PAGING, detail="being read from the store"))
        if scope_name in lane.fair:
            rank = lane.fair.rank(scope_name)
            if rank:
                reasons.append(
                    WhyWaiting(
                        reason=WaitReason.FAIR_SHARE,
                        detail=f"behind {rank} other scopes further below their fair share",
                    )
                )
    if ahead_in_scope:
        reasons.append(
            WhyWaiting(reason=WaitReason.QUEUED, detail=f"behind {ahead_in_scope} earlier jobs of its scope")
        )
    return reasons


def lane_blocks(lane: Lane, now: float) -> list[WhyWaiting]:
    """What holds a dependency's waiting jobs back: its own limits and gates, and how many
    scopes a cap of their own holds (the same `block` and parking `why_scope` explains per job)."""
    reasons = _blocked(lane, now)
    if not any(reason.reason is WaitReason.RECOVERING for reason in reasons):
        view = lane.gate.ramp.view(now)  # in force, though not stopping an admission right now
        if view is not None:
            reasons.append(WhyWaiting(reason=WaitReason.RECOVERING, detail=view.describe(now)))
    fairness = lane.policy.fairness
    for reason, count in lane.parked.items():
        if count <= 0:
            continue
        scopes = f"{count} scope{'s' if count != 1 else ''}"
        until: float | None
        if reason is WaitReason.SCOPE_CONCURRENCY:
            detail = f"{scopes} at scope concurrency {fairness.scope_concurrency}"
            until = None
        elif reason is WaitReason.SCOPE_RATE:
            detail = f"{scopes} at a scope rate limit ({', '.join(map(str, fairness.scope_rate_limits))})"
            until = lane.rate_parked[0][0] if lane.rate_parked else None
        else:
            detail = f"{scopes} whose next job is a retry over the retry budget"
            until = lane.gate.retry_free_at(now)
        reasons.append(WhyWaiting(reason=reason, detail=detail, until=until))
    return reasons


def in_memory_ahead(lane: Lane, scope: str) -> int:
    """Jobs of a scope in memory that go before any of its first attempts still in the store."""
    state = lane.scopes.get(scope)
    return len(state.fresh) + len(state.again) if state is not None else 0


def lane_stats(lane: Lane) -> LaneStats:
    return LaneStats(
        dependency=lane.policy.name,
        ready=lane.eligible - lane.stored,
        stored=lane.stored,
        delayed=len(lane.delayed),
        held=len(lane.held),
        # Scopes at a cap of their own are out of the fair queue, and still wait.
        scopes=len(lane.fair) + lane.parked.total(),
        parked=lane.parked.total(),
    )


def scope_stats(lane: Lane, top: int | None) -> list[ScopeStats]:
    """Per scope, the largest backlogs first (`top` of them; O(scopes))."""
    scopes = lane.scopes.values()
    chosen = (
        heapq.nlargest(top, scopes, key=lambda s: s.eligible + s.delayed)
        if top is not None
        else sorted(scopes, key=lambda s: -(s.eligible + s.delayed))
    )
    return [_scope_stats(lane, scope) for scope in chosen]


def scope_backlogs(lane: Lane, names: list[str]) -> list[tuple[int, str]]:
    """(waiting, name) of each named scope the lane still knows: a caller ranks a large lane
    slice by slice (over a copy of its names) instead of in one long step."""
    scopes = lane.scopes
    return [
        (scope.eligible + scope.delayed, name) for name in names if (scope := scopes.get(name)) is not None
    ]


def scope_stats_of(lane: Lane, names: list[str]) -> list[ScopeStats]:
    """ScopeStats of each named scope the lane still knows, in the order given."""
    scopes = lane.scopes
    return [_scope_stats(lane, scope) for name in names if (scope := scopes.get(name)) is not None]


def _scope_stats(lane: Lane, scope: Scope) -> ScopeStats:
    return ScopeStats(
        dependency=lane.policy.name,
        scope=scope.name,
        waiting=scope.eligible + scope.delayed,
        held=scope.held,
        admitted=scope.admitted,
        oldest_waiting_since=lane.oldest(scope),
    )


def oldest_waiting_since(lane: Lane) -> float | None:
    """eligible_at of the dependency's oldest eligible job in memory (O(scopes))."""
    heads = (lane.oldest(scope) for scope in lane.scopes.values())
    return min((head for head in heads if head is not None), default=None)


@functools.cache
def _label(limit: RateLimit) -> str:
    """A limit as configured ("100/1s"), worked out once: the metrics ask for it after every tick."""
    return str(limit)


def lane_limits(lane: Lane, now: float) -> LaneLimits:
    """Each limit of the dependency with its use, and which one decides the next admission."""
    return LaneLimits(
        dependency=lane.policy.name,
        rates=tuple(
            RateUse(
                limit=_label(window.limit),
                count=window.limit.count,
                window=window.limit.window,
                used=window.limit.count - window.room(now),
            )
            for window in lane.windows
        ),
        concurrency=lane.policy.concurrency,
        held=len(lane.held),
        blocked=lane.block(now),
    )


def waiting_by_reason(lane: Lane, now: float) -> Counter[WaitReason]:
    """Every waiting job of the dependency under the one reason that holds it back first (O(scopes)):
    a scope's own cap, else what blocks the whole dependency, else its turn (fair share); retries
    not yet eligible wait for their backoff. The counts add up to the waiting jobs."""
    counts: Counter[WaitReason] = Counter()
    counts[WaitReason.BACKOFF] = len(lane.delayed)
    block = lane.block(now) if lane.eligible else None
    unparked = block.reason if block is not None else WaitReason.FAIR_SHARE
    for scope in lane.scopes.values():
        eligible = scope.eligible
        if eligible:
            counts[scope.parked or unparked] += eligible
    return counts


def drain_shadow(lanes: Mapping[str, Lane]) -> dict[tuple[str, str], int]:
    """(dependency, shadow limit) -> admissions it would have held back since the last call."""
    drained: dict[tuple[str, str], int] = {}
    for name, lane in lanes.items():
        if lane.shadow is not None:
            for limit, count in lane.shadow.drain().items():
                drained[(name, limit)] = count
    return drained


def recovery_shares(lanes: Mapping[str, Lane], now: float) -> dict[str, float]:
    """Per dependency: the share of its capacity its recovery ramp allows at `now` (1.0: no ramp)."""
    shares = {}
    for name, lane in lanes.items():
        view = lane.gate.ramp.view(now) if lane.gate.ramp.started is not None else None
        shares[name] = view.share if view is not None else 1.0
    return shares
