"""Dependencies whose capacity Janus is not told, for the adaptive limits' tests and benchmark.

`SlidingApi` accepts at most `capacity(now)` calls in any 1 s sliding window and throttles the
rest; `LatencyApi` answers in `base` seconds up to `knee` calls at once, and ever slower past
it. `run` plays a backlog through the production `Scheduler` on a virtual clock against one
of them and returns what the workers would see, one `Second` per second.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from janus.core.decisions import Verdict
from janus.core.jobs import Job
from janus.core.policy import AdaptivePolicy, DependencyPolicy, RecoveryPolicy, RetryPolicy
from janus.core.scheduler import Scheduler


class SlidingApi:
    def __init__(self, capacity: Callable[[float], int], window: float = 1.0) -> None:
        self.capacity = capacity
        self.window = window
        self._accepted: deque[float] = deque()

    def call(self, now: float) -> bool:
        """True if accepted; False: throttled (not counted against the window)."""
        accepted = self._accepted
        while accepted and accepted[0] + self.window <= now:
            accepted.popleft()
        if len(accepted) >= self.capacity(now):
            return False
        accepted.append(now)
        return True


@dataclass(kw_only=True)
class LatencyApi:
    """Latency `base` up to `knee` calls in flight, then base x (in flight / knee) ** steepness."""

    knee: int
    base: float = 0.1
    steepness: float = 3.0
    in_flight: int = 0

    def latency(self) -> float:
        return float(self.base * max(1.0, self.in_flight / self.knee) ** self.steepness)


@dataclass(kw_only=True)
class Second:
    at: int
    capacity: int  # what the API accepts in the second (SlidingApi) or its knee (LatencyApi)
    rate_limit: float | None
    concurrency_limit: int | None
    ok: int = 0
    throttled: int = 0
    latencies: list[float] = field(default_factory=list)


def policy(adaptive: AdaptivePolicy, *, name: str = "api") -> DependencyPolicy:
    # Retries wait 50 ms at most and never die: the backlog stays, as in the e2e test.
    retry = RetryPolicy(max_attempts=1000, base_delay=0.01, max_delay=0.05, budget=1.0)
    return DependencyPolicy(
        name=name, lease_timeout=60.0, adaptive=adaptive, retry=retry, recovery=RecoveryPolicy(ramp=0.0)
    )


def run(
    dependency: DependencyPolicy,
    *,
    seconds: float,
    sliding: SlidingApi | None = None,
    latency: LatencyApi | None = None,
    capacity: Callable[[float], int] = lambda now: 0,
    rtt: float = 0.05,
    step: float = 0.01,
    backlog: int = 2_000,
    seed: int = 1,
) -> list[Second]:
    """Play a backlog of `backlog` jobs, topped up as they finish, through a Scheduler for `seconds`
    (virtual): each admission is called at once; its result comes back `rtt` later (SlidingApi) or
    after the API's latency (LatencyApi)."""
    rng = random.Random(seed)
    core = Scheduler([dependency], random.Random(seed))
    submitted = finished = 0
    stored: list[Job] = []  # first attempts in submission order: the pages the store would read
    due: list[tuple[float, int, str, int, bool, float]] = []  # (at, serial, job, attempt, ok, duration)
    serial = 0
    out: list[Second] = []
    now = 0.0
    while now < seconds:
        while submitted - finished < backlog:  # kept in memory: no store to page from
            stored.append(
                core.submit(
                    job_id=f"j{submitted}", dependency=dependency.name, scope="s", payload=None, now=now
                )
            )
            submitted += 1
        for request in core.page_requests():
            first = bisect.bisect_right([job.seq for job in stored], request.after_seq)
            core.load_page(request, stored[first : first + request.limit])
        if len(stored) > 4 * backlog:
            del stored[: 2 * backlog]  # long admitted
        second = math.floor(now)
        if not out or out[-1].at != second:
            out.append(_second(core, dependency.name, second, sliding, latency, capacity))
        while due and due[0][0] <= now:
            at, _, job_id, attempt, ok, duration = heapq.heappop(due)
            if latency is not None:
                latency.in_flight -= 1
            transition = core.on_result(
                job_id=job_id,
                attempt=attempt,
                success=ok,
                error=None if ok else "throttled",
                retry_after=None,
                now=at,
                throttled=not ok,
                duration=duration,
            )
            finished += transition.verdict in (Verdict.SUCCEEDED, Verdict.DEAD)
            out[-1].latencies.append(duration)
            if ok:
                out[-1].ok += 1
            else:
                out[-1].throttled += 1
        for admission in core.admit(now).admissions:
            serial += 1
            if latency is not None:
                latency.in_flight += 1
                took = latency.latency() * rng.uniform(0.9, 1.1)
                ok = True
            else:
                ok = sliding.call(now) if sliding is not None else True
                took = rtt * rng.uniform(0.8, 1.2)
            heapq.heappush(due, (now + took, serial, admission.job_id, admission.attempt, ok, took))
        core.drain_changes()
        core.drain_adaptive()
        now = round(now + step, 9)
    return out


def _second(
    core: Scheduler,
    name: str,
    at: int,
    sliding: SlidingApi | None,
    latency: LatencyApi | None,
    capacity: Callable[[float], int],
) -> Second:
    view = core.adaptive_views().get(name)
    cap = (
        sliding.capacity(at) if sliding is not None else latency.knee if latency is not None else capacity(at)
    )
    return Second(
        at=at,
        capacity=cap,
        rate_limit=view.rate if view is not None else None,
        concurrency_limit=view.concurrency if view is not None else None,
    )
