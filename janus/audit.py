"""Check the invariants from the workers' side: the shared judge of the demo and the tests.

Pure functions over `WorkRecord`s (what workers saw), the core's policies and,
when given, the job table's final states. A rate limit COUNT/T is checked where it
promises: by the workers' start times in every window [t, t + T) (a limit that counts
starts, the default) or [t, t + T - admission_ttl) (one that counts admissions), and by
the places admissions hold in the windows Janus counts them in: from `admitted_at` for the
span (T + ttl, or T), or shorter once a result told when the call began (`place_end`), at
most COUNT at any admission's instant; the densest windows always start at a record, so
those are the ones counted. A
scope's rate limits the same way, per scope. Concurrency by the most handlers running
at once. `audit_database` reads the job table (through the store) and returns the same
one report.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from janus.client.worker import WorkRecord
from janus.core.policy import DependencyPolicy, RateCounting, RateLimit


def max_in_window(times: Sequence[float], window: float) -> int:
    """The most of `times` that fall in any half-open window [t, t + window)."""
    ordered = sorted(times)
    best = 0
    for index, start in enumerate(ordered):
        end = bisect.bisect_left(ordered, start + window, lo=index)
        best = max(best, end - index)
    return best


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals [start, end) that share one instant: one ending when another starts does not overlap it."""
    events = []
    for start, end in intervals:
        events.append((start, 1))
        events.append((end, -1))
    events.sort(key=lambda event: (event[0], event[1]))
    running = best = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best


def start_window(limit: RateLimit, admission_ttl: float) -> float:
    """The windows a limit bounds the workers' starts in: T if it counts starts, else T - ttl
    (not positive: it bounds no start window)."""
    return limit.window if limit.counts is RateCounting.STARTS else limit.window - admission_ttl


def place_end(record: WorkRecord, limit: RateLimit, admission_ttl: float) -> float:
    """The earliest end Janus can have given the admission's place in the limit's window.

    A limit that counts starts holds an admission for its span (T + ttl), or, once a result
    says how long the call took, until T after the latest time the call can have begun
    (core/rate.py, `SlidingWindow.trim`). That time is at least the admission plus the time the
    admission waited in the worker before it started (started - received, on the worker's own
    clock, so no two clocks are compared), which is all the records tell."""
    span = limit.admission_window(admission_ttl)
    if limit.counts is not RateCounting.STARTS or record.started_at is None:
        return record.admitted_at + span
    waited = record.started_at - record.received_at
    if waited >= admission_ttl:
        return record.admitted_at + span
    return record.admitted_at + max(0.0, waited) + limit.window


def most_places_held(admitted: Sequence[float], ends: Sequence[float]) -> int:
    """The most places [admitted, end) held at one admission's instant: what the core's sliding
    window counted when it admitted (for ends admitted + span: `max_in_window` over the span)."""
    starts, stops = sorted(admitted), sorted(ends)
    return max((bisect.bisect_right(starts, at) - bisect.bisect_right(stops, at) for at in starts), default=0)


def worst_of_limit(limit: RateLimit, admission_ttl: float, group: Sequence[WorkRecord]) -> tuple[int, int]:
    """(most admissions holding a place in the limit's window at once, most starts in one of its
    start windows)."""
    starts = start_window(limit, admission_ttl)
    started = [r.started_at for r in group if r.started_at is not None]
    worst_start = max_in_window(started, starts) if starts > 0 else 0
    admitted = [r.admitted_at for r in group]
    ends = [place_end(r, limit, admission_ttl) for r in group]
    return most_places_held(admitted, ends), worst_start


@dataclass(kw_only=True)
class DependencyAudit:
    dependency: str
    admissions_seen: int
    # "COUNT/Ts" (a scope's: "scope COUNT/Ts", the worst scope) -> most admissions holding a
    # place in the window Janus counts them in at once (`place_end`)
    worst_rate: dict[str, int] = field(default_factory=dict)
    # the same keys -> most starts in one window of T (T - ttl for a limit counting admissions)
    worst_start_rate: dict[str, int] = field(default_factory=dict)
    worst_concurrency: int = 0
    rate_excess: int = 0  # > 0: a limit was broken by this many
    concurrency_excess: int = 0


@dataclass(kw_only=True)
class AuditReport:
    dependencies: dict[str, DependencyAudit]
    # Expected jobs not finished: no worker finished them with success and they are not known
    # dead, or (with the job table) the table does not hold them as succeeded or dead.
    lost: list[str]
    duplicate_starts: list[tuple[str, int]]  # one admission started more than once
    # A job completed more than once: only a worker that dies between its handler's success
    # and its report, or one outside the protocol, can cause it; a clean run has none.
    repeated_successes: list[str]
    # With the job table: what it and the workers disagree on (a clean run has none).
    never_stored: list[str] = field(default_factory=list)  # expected, absent from the table
    succeeded_unseen: list[str] = field(default_factory=list)  # "succeeded" but no worker success
    table_states: dict[str, int] = field(default_factory=dict)  # state -> jobs, for the summary

    @property
    def worst_rate_excess(self) -> int:
        return max((d.rate_excess for d in self.dependencies.values()), default=0)

    @property
    def worst_concurrency_excess(self) -> int:
        return max((d.concurrency_excess for d in self.dependencies.values()), default=0)

    @property
    def ok(self) -> bool:
        return (
            not self.lost
            and not self.duplicate_starts
            and not self.repeated_successes
            and not self.never_stored
            and not self.succeeded_unseen
            and self.worst_rate_excess <= 0
            and self.worst_concurrency_excess <= 0
        )

    def summary(self) -> str:
        lines = []
        for audit in self.dependencies.values():
            rates = (
                ", ".join(
                    f"{limit}: worst {audit.worst_start_rate.get(limit, 0)} starts, {worst} admissions"
                    for limit, worst in audit.worst_rate.items()
                )
                or "no rate limit"
            )
            lines.append(
                f"{audit.dependency}: {audit.admissions_seen} admissions seen; {rates}; "
                f"worst concurrency {audit.worst_concurrency}; "
                f"rate excess {max(audit.rate_excess, 0)}, concurrency excess {max(audit.concurrency_excess, 0)}"
            )
        lines.append(
            f"lost jobs: {len(self.lost)}, duplicate starts: {len(self.duplicate_starts)}, "
            f"jobs completed twice: {len(self.repeated_successes)}"
        )
        if self.lost:
            lines.append(f"lost, for example: {', '.join(self.lost[:5])}")
        if self.table_states:
            states = ", ".join(f"{state} {count}" for state, count in sorted(self.table_states.items()))
            lines.append(
                f"job table: {states}; never stored: {len(self.never_stored)}, "
                f"succeeded without a worker's success: {len(self.succeeded_unseen)}"
            )
        return "\n".join(lines)


def audit(
    records: Sequence[WorkRecord],
    policies: Mapping[str, DependencyPolicy],
    *,
    expected_jobs: Iterable[str] = (),
    dead_jobs: Iterable[str] = (),
    job_states: Mapping[str, str] | None = None,
) -> AuditReport:
    """`job_states` (job_id -> state, from the job table at the end) makes the table a second
    witness: its dead jobs count as finished, and what it holds must agree with the workers."""
    by_dependency: dict[str, list[WorkRecord]] = defaultdict(list)
    for record in records:
        by_dependency[record.dependency].append(record)

    report: dict[str, DependencyAudit] = {}
    for name, policy in policies.items():
        seen = by_dependency.get(name, [])
        result = DependencyAudit(dependency=name, admissions_seen=len(seen))
        ttl = policy.admission_ttl
        excess = 0
        groups: list[tuple[str, Sequence[RateLimit], list[WorkRecord]]] = [("", policy.rate_limits, seen)]
        if policy.fairness.scope_rate_limits:
            by_scope: dict[str, list[WorkRecord]] = defaultdict(list)
            for record in seen:
                by_scope[record.scope].append(record)
            groups += [("scope ", policy.fairness.scope_rate_limits, group) for group in by_scope.values()]
        for prefix, limits, group in groups:
            for limit in limits:
                key = f"{prefix}{limit}"
                worst, worst_start = worst_of_limit(limit, ttl, group)
                result.worst_rate[key] = max(result.worst_rate.get(key, 0), worst)
                result.worst_start_rate[key] = max(result.worst_start_rate.get(key, 0), worst_start)
                excess = max(excess, worst - limit.count, worst_start - limit.count)
        result.rate_excess = excess
        result.worst_concurrency = max_overlap(
            (r.started_at, r.finished_at)
            for r in seen
            if r.started_at is not None and r.finished_at is not None
        )
        if policy.concurrency is not None:
            result.concurrency_excess = result.worst_concurrency - policy.concurrency
        report[name] = result

    starts = Counter((r.job_id, r.attempt) for r in records if r.started_at is not None)
    successes = Counter(r.job_id for r in records if r.outcome == "success")
    expected = set(expected_jobs)
    dead = set(dead_jobs)
    never_stored: list[str] = []
    succeeded_unseen: list[str] = []
    table_states: dict[str, int] = {}
    if job_states is not None:
        dead |= {job for job, state in job_states.items() if state == "dead"}
        final = {job for job, state in job_states.items() if state in ("succeeded", "dead")}
        lost = (expected - set(successes) - dead) | (expected - final)
        never_stored = sorted(expected - set(job_states))
        succeeded_unseen = sorted(
            job for job, state in job_states.items() if state == "succeeded" and job not in successes
        )
        table_states = dict(Counter(job_states.values()))
    else:
        lost = expected - set(successes) - dead
    return AuditReport(
        dependencies=report,
        lost=sorted(lost),
        duplicate_starts=sorted(key for key, n in starts.items() if n > 1),
        repeated_successes=sorted(job for job, n in successes.items() if n > 1),
        never_stored=never_stored,
        succeeded_unseen=succeeded_unseen,
        table_states=table_states,
    )


async def audit_database(
    records: Sequence[WorkRecord],
    policies: Mapping[str, DependencyPolicy],
    database_url: str,
    *,
    expected_jobs: Iterable[str] = (),
) -> AuditReport:
    """`audit` with the job table read from `database_url` as the second witness."""
    from janus.store.repository import Store  # the pure checker above needs no driver

    store = await Store.connect(database_url, application_name="janus-audit")
    try:
        states = await store.job_states()
    finally:
        await store.close()
    return audit(records, policies, expected_jobs=expected_jobs, job_states=states)


def retry_budget_excess(records: Sequence[WorkRecord], policy: DependencyPolicy) -> int:
    """The retry budget seen from the workers: for every retry admission at s (a job whose
    earlier attempt failed), the admissions with admitted_at in (s - W, s] hold at most
    max(min_retries, budget × admissions) retries (core/retry_budget.py). Returns the worst
    excess over that bound (<= 0: the budget held). Counts every admission a worker received,
    started or expired; an attempt that failed by lease time-out, unseen here, is not a retry."""
    seen = sorted(
        (r for r in records if r.dependency == policy.name), key=lambda r: (r.admitted_at, r.attempt)
    )
    failed_before: dict[str, float] = {}  # job -> admitted_at of its first failed attempt
    for record in seen:
        if record.outcome == "failure":
            failed_before.setdefault(record.job_id, record.admitted_at)
    stamps = [r.admitted_at for r in seen]
    retry_flags = [r.job_id in failed_before and r.admitted_at > failed_before[r.job_id] for r in seen]
    retry_prefix = [0]
    for flag in retry_flags:
        retry_prefix.append(retry_prefix[-1] + flag)
    window, budget, floor = policy.retry.budget_window, policy.retry.budget, policy.retry.min_retries
    worst = -floor
    for at, flag in zip(stamps, retry_flags, strict=True):
        if not flag:
            continue
        end = bisect.bisect_right(stamps, at)
        # (s - W, s] as the core counts it: admitted_at + W > s (the sum, like the rate windows).
        start = bisect.bisect_right(stamps, at, key=lambda t: t + window)
        retries = retry_prefix[end] - retry_prefix[start]
        allowed = max(floor, math.floor(budget * (end - start) + 1e-9))
        worst = max(worst, retries - allowed)
    return worst
