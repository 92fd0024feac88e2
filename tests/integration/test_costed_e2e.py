"""Costed jobs end to end, measured at the workers (issue 23).

A fake API counts the units of the calls it served in a sliding window of T (a token-per-minute
limit scaled down to two seconds: see below) and answers "throttled" to a call that would take it
past its budget.
Janus limits the dependency to the same budget, `"BUDGET units/1s"`, counting starts. Job costs
come from a wide (log-normal) distribution, and every estimate is off by up to 50 %: 0.5..1 times
the actual cost for the first half of the jobs, 1..1.5 times for the second half (errors that
cancel out on average would hide a missing correction in the limit's slack); the worker reports
each actual cost (`Cost`), which Janus settles in place of the estimate.

The bound (docs/protocol.md, Costed jobs), checked on every call the API throttled: take the
calls the API served in the window of T before it, and the throttled call; Janus's last admission
among them was decided with each of them charged at its actual cost if its result had been
applied, else at its estimate. So the API's overrun is at most the under-estimated part of
the calls whose results Janus had not applied then: a call whose window holds no such call is
never throttled ("once the estimates are corrected"). When a result was applied is observed
from outside, by its outcome on janus.outcomes (published after the tick that applied it
committed). With the correction switched off in the core (results' `cost` ignored), both
checks below fail: throttled calls beyond the bound, and a lower goodput.

Goodput: a limit that counts starts holds each admission's place in its window until T after the
latest time its call can have started. Without a result that is the admission's expiry (a start may
come up to the TTL after its admission), so at most BUDGET per T + TTL would reach the API; the
worker's result says how long the call took (`duration`), so Janus trims the place to T after the
result's arrival less that duration (core/rate.py), and the API gets BUDGET per T plus the time an
admission takes to reach the worker and its result to come back. The run must reach 90 % of the
budget while jobs wait (the issue's bound). That time is fixed, some 70-150 ms on the shared 2-core
test machine (printed by the run): 0.2 % of the issue's minute, but 7-15 % of a 1 s window, where
the runs reached 88-90 % of the budget (docs/benchmarks.md). So the scale here is 2 s, the same
units per second as 2000 per 1 s. The TTL does not scale with T: it must cover the time an
admission takes to reach the worker, a p99 of 0.2-0.6 s at load 13-20; with a tenth of a 1 s T, up
to two thirds of the admissions expired there, each holding its units until it came back. With
the trim the TTL no longer costs goodput. The worker and the fake API read Janus's clock (the host
clock corrected by the database's: the same here), so that the TTL is not
eaten by the difference between two readings of one clock.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import math
import random
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from janus.broker import topology
from janus.client import Cost, Producer, Throttled, Worker
from janus.client.worker import ReadyJob, WorkRecord
from tests.integration.harness import make_config, running_janus

pytestmark = pytest.mark.integration

# Units per sliding window of T, at the API and in Janus's limit (see the docstring).
# About 40 jobs per window; the first window admits them in one tick, and the last of that burst
# must still reach the worker within the TTL on a loaded machine.
BUDGET, T, TTL = 4_000, 2.0, 0.25
UNTRIMMED = BUDGET / (T + TTL)  # units per second without the trim: every place held T + TTL
JOBS = 400  # about 37,000 units: a backlog for some nine windows
EPSILON = 1e-6  # the API sums floats


@dataclass(frozen=True, kw_only=True, slots=True)
class Call:
    at: float  # when the call reached the API (Janus's clock)
    job_id: str
    units: float  # its actual cost
    estimate: float
    admitted_at: float
    served: bool


class FakeApi:
    """Counts units per sliding window of T; past the budget a call is throttled and costs nothing."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.calls: list[Call] = []
        self._recent: deque[Call] = deque()  # the calls served in the last window of T

    async def call(self, job: ReadyJob) -> Cost:
        assert isinstance(job.payload, dict)
        actual, estimate = float(job.payload["actual"]), float(job.payload["estimate"])
        now = self._clock()
        while self._recent and self._recent[0].at <= now - T:
            self._recent.popleft()
        served = sum(c.units for c in self._recent) + actual <= BUDGET + EPSILON
        self.calls.append(
            Call(
                at=now,
                job_id=job.job_id,
                units=actual,
                estimate=estimate,
                admitted_at=job.admitted_at,
                served=served,
            )
        )
        if not served:
            raise Throttled(cost=0.0)
        self._recent.append(self.calls[-1])
        return Cost(actual)


class Records:
    """The worker's records, and an event once every job succeeded: an O(1) check per record, since
    a check that walks every record, run on each, slows the worker's loop as the run grows."""

    def __init__(self, jobs: int) -> None:
        self.records: list[WorkRecord] = []
        self._left = jobs
        self.all_succeeded = asyncio.Event()

    def append(self, record: WorkRecord) -> None:
        self.records.append(record)
        if record.outcome == "success":
            self._left -= 1
            if not self._left:
                self.all_succeeded.set()


def unsettled_under_estimates(window: list[Call], settled_at: dict[str, float]) -> float:
    """The under-estimated units of the calls in `window` whose results Janus may not have applied
    when it decided the last of their admissions."""
    last = max(c.admitted_at for c in window)
    return sum(
        c.units - c.estimate
        for c in window
        if c.units > c.estimate and not settled_at.get(c.job_id, float("inf")) < last
    )


def mean_use(served: list[Call], start: float, end: float, step: float = 0.01) -> float:
    """The units of `served` calls in the window of T before each instant of [start, end), every
    `step`, averaged."""
    ordered = sorted(served, key=lambda c: c.at)
    times = [c.at for c in ordered]
    before = list(itertools.accumulate((c.units for c in ordered), initial=0.0))
    instants = [start + i * step for i in range(max(1, math.ceil((end - start) / step)))]
    return statistics.fmean(
        before[bisect.bisect_right(times, t)] - before[bisect.bisect_right(times, t - T)] for t in instants
    )


def window_of(call: Call, calls: list[Call]) -> list[Call]:
    """The calls the API served in the window of T before `call`, and `call`."""
    return [c for c in calls if c.served and call.at - T < c.at < call.at] + [call]


async def test_units_at_the_api_stay_within_the_budget_and_use_it(database: str, vhost: str) -> None:
    rng = random.Random(23)
    jobs = []
    for i in range(JOBS):
        actual = round(min(400.0, max(1.0, rng.lognormvariate(4.0, 1.0))), 1)
        # Off by up to 50 %: too low for the first half of the jobs, too high for the second.
        low = i < JOBS // 2
        estimate = round(actual * (rng.uniform(0.5, 1.0) if low else rng.uniform(1.0, 1.5)), 1)
        jobs.append((f"job-{i:04}", actual, estimate))
    config = make_config(
        database,
        vhost,
        {
            "llm": {
                "rate_limits": [f"{BUDGET} units/{T:g}s"],
                "admission_ttl": f"{TTL}s",
                "lease_timeout": "5s",
                "retry": {"base_delay": "0.2s", "max_delay": "1s", "budget": 1.0, "max_attempts": 20},
                # Admissions that expire while a loaded machine hands them over fail unstarted:
                # they say nothing of the API, and must not open the circuit.
                "circuit": {"enabled": False},
            }
        },
    )
    log = Records(len(jobs))
    settled_at: dict[str, float] = {}  # job -> when its outcome arrived: its result applied before
    all_settled = asyncio.Event()
    async with running_janus(config) as service:
        api = FakeApi(service.clock)

        async def on_outcome(message: AbstractIncomingMessage) -> None:
            settled_at[json.loads(message.body)["job_id"]] = service.clock()
            await message.ack()
            if len(settled_at) == len(jobs):
                all_settled.set()

        async with await aio_pika.connect(vhost) as listening:
            channel = await listening.channel()
            outcomes = await channel.declare_queue(exclusive=True)
            await outcomes.bind(topology.OUTCOMES_EXCHANGE, routing_key="llm.*")
            await outcomes.consume(on_outcome)
            async with await Producer.connect(vhost) as producer:
                # Submitted before any worker consumes: Janus admits nothing until one does, so
                # the producer's confirms do not compete with the run for the CPU.
                await asyncio.gather(
                    *(
                        producer.submit(job_id, "llm", {"actual": a, "estimate": e}, cost=e)
                        for job_id, a, e in jobs
                    )
                )
            worker = Worker(vhost, {"llm": api.call}, on_record=log.append, prefetch=200, clock=service.clock)
            await worker.start()
            await asyncio.wait_for(log.all_succeeded.wait(), timeout=120)
            await worker.stop()
            await asyncio.wait_for(all_settled.wait(), timeout=10)

    calls = api.calls
    served = [c for c in calls if c.served]
    throttled = [c for c in calls if not c.served]
    unexplained = []
    for call in throttled:
        window = window_of(call, calls)
        overrun = sum(c.units for c in window) - BUDGET
        if overrun > unsettled_under_estimates(window, settled_at) + EPSILON:
            unexplained.append((call.job_id, round(overrun, 1)))
    # The calls whose window held no unsettled under-estimate: the bound says none is throttled.
    corrected = [c for c in calls if unsettled_under_estimates(window_of(c, calls), settled_at) == 0]
    worst = max(sum(c.units for c in window_of(call, calls)) for call in served)
    # Goodput while jobs wait: the units the API served in the window of T before each instant,
    # averaged over instants every 10 ms from one window after the first call (the first
    # window's burst is a whole budget at once) to the last first admission of a job, per T.
    # What a sliding budget is used to; units over a stretch would swing by a whole window with
    # where the stretch's ends fall against the waves of admissions that each freed window brings.
    backlog_ends = max(min(r.admitted_at for r in log.records if r.job_id == j) for j, _, _ in jobs)
    goodput = mean_use(served, calls[0].at + T, backlog_ends) / T
    expired = sum(1 for r in log.records if r.outcome == "expired")
    # What a place costs beyond T: the admission's way to the worker, and its result's way back.
    to_worker = statistics.median(c.at - c.admitted_at for c in calls)
    back = statistics.median(settled_at[c.job_id] - c.at for c in served if c.job_id in settled_at)
    print(
        f"\n{len(calls)} calls, {sum(c.units for c in served):,.0f} units served; goodput "
        f"{goodput:,.0f} units/s over {backlog_ends - calls[0].at - T:.1f} s (budget {BUDGET / T:,.0f}/s, "
        f"untrimmed ceiling {UNTRIMMED:,.0f}/s, {goodput / (BUDGET / T):.1%} of the budget); "
        f"busiest window {worst:,.0f}; {len(throttled)} throttled, {len(unexplained)} beyond the "
        f"bound; {len(corrected)} calls with their window's estimates corrected; {expired} expired; "
        f"median admission to call {to_worker * 1000:.0f} ms, call to outcome {back * 1000:.0f} ms"
    )
    assert unexplained == []
    assert len(corrected) >= len(calls) // 4, "the check must bear on many calls"
    assert worst <= BUDGET + EPSILON  # the fake API's own rule: it never served more
    assert goodput >= 0.9 * BUDGET / T  # within 10 % of the budget
