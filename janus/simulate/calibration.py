"""The workload's `start_delay` and `report_delay`, measured from the records real workers keep.

The simulation cannot know how long the broker, the database and the leader's ticks take; the
workload names it in two delays per dependency (docs/simulate.md). A real run shows both, each as
one hop of the path, never from the run's length:
- `start_delay`: an admission's `admitted_at` (the leader's decision) to the worker's start of
  the call (or to its arrival at the worker, when the workers' `slots` make it wait for a handler:
  the simulation models that wait itself);
- `report_delay`: a place's freeing to the admission that took it, while the dependency was held at
  that limit with jobs waiting. The m-th admission needs m - COUNT places freed, so with both
  sorted the m-th admission pairs with the (m - COUNT)-th freeing. A concurrency slot frees when
  its call ends; a rate window's place (counting starts) T after its call began, which the leader
  learns from the result. What lies between is the result's way to the leader and its next tick:
  what the simulation plays as `report_delay`.

Both are means, not medians: the simulation adds its fixed delay once per hop, and a rate window's
place or a concurrency slot passes from hop to hop for the whole run, so what carries to the end
is the sum of the hops, whose expectation is the number of hops times the mean hop. Under load the
hops skew right (a late tick, a slow delivery), and a median would leave that skew out of every
one. The records' times mix the leader's and the workers' clocks, so they must be in step (one
host, or synchronised hosts).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import fmean, median

from janus.client.worker import WorkRecord
from janus.core.policy import DependencyPolicy, RateCounting, RateLimit


@dataclass(frozen=True, kw_only=True, slots=True)
class Hop:
    """A measured delay over `samples` hops, in seconds: `seconds` is their mean, the figure for
    the workload; `median` tells how skewed they were."""

    seconds: float
    median: float
    samples: int

    @classmethod
    def of(cls, hops: Sequence[float]) -> Hop | None:
        return cls(seconds=fmean(hops), median=median(hops), samples=len(hops)) if hops else None


def start_delay(records: Iterable[WorkRecord], *, handlers_limited: bool = False) -> Hop | None:
    """Admission to the call's start (or, `handlers_limited`, to its arrival at the worker);
    None if no admission started."""
    hops = [
        (record.received_at if handlers_limited else record.started_at) - record.admitted_at
        for record in records
        if record.started_at is not None
    ]
    return Hop.of(hops)


def report_delay(
    records: Iterable[WorkRecord],
    policy: DependencyPolicy,
    *,
    limit: RateLimit | None = None,
    held_until: float | None = None,
) -> Hop | None:
    """A place's freeing to the admission that took it, for the records of one dependency that its
    concurrency or `limit` (a rate limit counting starts) held. Only admissions made up to
    `held_until` (the leader's clock) count: after it, the dependency may have had nothing waiting.
    None if no admission waited for a place."""
    records = list(records)
    count, frees = _places(records, policy, limit)
    admitted = sorted(
        record.admitted_at for record in records if held_until is None or record.admitted_at <= held_until
    )
    hops = [admitted[n + count] - free for n, free in enumerate(frees[: max(0, len(admitted) - count)])]
    return Hop.of(hops)


def _places(
    records: Sequence[WorkRecord], policy: DependencyPolicy, limit: RateLimit | None
) -> tuple[int, list[float]]:
    """How many places the holding limit has, and when each record's place freed, sorted."""
    if limit is None:
        if policy.concurrency is not None and not policy.rate_limits:
            # An unstarted admission is refused at once: its slot comes back with that answer.
            ends = [r.finished_at if r.finished_at is not None else r.received_at for r in records]
            return policy.concurrency, sorted(ends)
        if len(policy.rate_limits) == 1 and policy.concurrency is None:
            limit = policy.rate_limits[0]
        else:
            raise ValueError(f"{policy.name}: name the rate limit that held it (several limits)")
    if limit.counts is not RateCounting.STARTS:
        raise ValueError(f"{policy.name}: a limit counting admissions frees its places without a result")
    span = limit.admission_window(policy.admission_ttl)
    return limit.count, sorted(
        r.admitted_at + span
        if r.started_at is None
        else min(r.admitted_at + span, max(r.admitted_at, r.started_at) + limit.window)
        for r in records
    )
