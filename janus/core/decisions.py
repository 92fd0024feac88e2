"""The values the scheduler answers with: admissions and why the rest waits, what an event did,
what to write, what to page in, and the figures an operator reads."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from janus.core.jobs import Admission, Job


class WaitReason(StrEnum):
    """Why a waiting job is not admitted now."""

    CONCURRENCY = "concurrency"  # the dependency's concurrency limit
    RATE = "rate"  # one of the dependency's rate limits
    SCOPE_CONCURRENCY = "scope_concurrency"  # its scope holds `scope_concurrency` slots
    SCOPE_RATE = "scope_rate"  # one of its scope's rate limits
    RETRY_BUDGET = "retry_budget"  # a retry, and the dependency's retries are over budget
    PAUSED = "paused"  # a worker's retry_after, or an operator (`janus pause`), pauses the whole dependency
    UNCONFIGURED = "unconfigured"  # its dependency was removed from the policy of record
    CIRCUIT = "circuit"  # the dependency's circuit is open, or half-open with every probe out
    RECOVERING = "recovering"  # the dependency's recovery ramp after an outage (core/recovery.py)
    NO_WORKER = "no_worker"  # nobody consumes the dependency's ready queue
    BACKOFF = "backoff"  # a retry, not eligible before `eligible_at`
    FAIR_SHARE = "fair_share"  # other scopes are further below their fair share
    QUEUED = "queued"  # earlier jobs of its own scope go first
    PAGING = "paging"  # its scope's next jobs are being read from the store


class Verdict(StrEnum):
    """What an event did to a job. The first four change it; the others change nothing."""

    SUCCEEDED = "succeeded"
    RETRY_SCHEDULED = "retry_scheduled"
    DEAD = "dead"
    RELEASED = "released"  # admission returned unused: slot freed, no attempt charged
    UNKNOWN_JOB = "unknown_job"  # never seen, or already finished
    STALE_ATTEMPT = "stale_attempt"  # not the job's current admission


class Transition(NamedTuple):
    """What an event did to a job (a NamedTuple, like `Job`: one is built per result)."""

    verdict: Verdict
    job: Job | None = None  # the job after the event, when it changed


class Blocked(NamedTuple):
    """A dependency that has jobs eligible now but may not admit them yet (a NamedTuple: a
    decision held by a limit builds one, and that is most decisions of a busy dependency)."""

    dependency: str
    reason: WaitReason
    limit: str  # which limit, e.g. "concurrency 20" or "rate 100/1s"
    until: float | None  # when it frees by the clock alone; None: when a slot is released
    waiting: int


class AdmitDecision(NamedTuple):
    """What one `admit` call decided (a NamedTuple, like `Transition`: one is built per tick)."""

    admissions: list[Admission]
    blocked: list[Blocked]
    next_wakeup: float | None  # when calling admit() again may change something


@dataclass(frozen=True, kw_only=True, slots=True)
class Changes:
    new: list[Job]  # submitted since the last drain, in their latest state: to insert
    updated: list[Job]  # already stored: to update


@dataclass(frozen=True, kw_only=True, slots=True)
class PageRequest:
    """Read the next first attempts of a scope from the store: seq > `after_seq`, in seq order."""

    dependency: str
    scope: str
    after_seq: int
    limit: int


@dataclass(frozen=True, kw_only=True, slots=True)
class WhyWaiting:
    """One reason a job waits; `until` is when it lifts by the clock alone, if known."""

    reason: WaitReason
    detail: str
    until: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class LaneStats:
    dependency: str
    ready: int  # eligible now, in memory
    stored: int  # eligible first attempts left in the store until their scope needs them
    delayed: int  # waiting for backoff
    held: int  # admitted, no result yet
    scopes: int  # scopes with eligible jobs (those held back by a cap of their own included)
    parked: int = 0  # of which out of the fair queue: at a cap of their own, or a retry over budget


@dataclass(frozen=True, kw_only=True, slots=True)
class ScopeStats:
    dependency: str
    scope: str
    waiting: int  # eligible (in memory or stored) and backing off
    held: int
    admitted: int  # admissions since this leader's term began
    oldest_waiting_since: float | None  # eligible_at of its oldest eligible job in memory


@dataclass(frozen=True, kw_only=True, slots=True)
class RateUse:
    """One rate limit of a dependency and how much of its current window is used."""

    limit: str  # as configured, e.g. "100/1s"
    count: int  # COUNT
    window: float  # T, seconds
    used: int  # admissions in the window that ends now (over the limit's span)


@dataclass(frozen=True, kw_only=True, slots=True)
class LaneLimits:
    """A dependency's own limits as they stand (O(1) per dependency: cheap every tick)."""

    dependency: str
    rates: tuple[RateUse, ...]
    concurrency: int | None
    held: int
    blocked: Blocked | None  # what decides the next admission, if anything holds it back
