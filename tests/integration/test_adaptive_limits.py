"""Adaptive limits end to end (issue 16), against real RabbitMQ and PostgreSQL, measured at the workers.

A simulated API whose capacity Janus is not told: it accepts at most C calls in any 1 s
sliding window and answers "throttled" beyond (the handler raises `Throttled`; the worker and
the API run in a process of their own, `sliding_api_worker.py`). The dependency
has `adaptive.enabled`, no static rate limit, `max_rate = "1000/1s"`, and a backlog of a few
thousand jobs. C is 40, then 20, then 40 again; the issue's criteria are checked on the calls
the workers made. A second test gives an API whose latency climbs steeply past K calls at once
and reports where the adaptive concurrency settles, and the p99 latency against the unloaded one;
there, the calls in flight at the API never exceed the highest limit in force since they were
admitted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from janus.client import Producer, ReadyJob, Worker
from janus.client.worker import WorkRecord
from janus.service.inspect import Inspector
from tests.integration.harness import RecordLog, make_config, running_janus

pytestmark = pytest.mark.integration

C_HIGH, C_LOW = 40, 20
# Seconds of each phase (C = 40, 20, 40). Each criterion is measured from 10 s after the start
# or the drop, and 20-27 s after the rise, to the phase's end. The first phase is measured over
# 15 s: its goodput is the mean of the rate's sawtooth (from 0.75 C to just over C, a cycle of
# about 6 s), and over 10 s it depended on where the cycles fell (32.4-35.5/s in runs that
# admitted as much as the rate in force allowed: docs/benchmarks.md, "adaptive").
HIGH, LOW, BACK = 25.0, 15.0, 27.0
# More than the run can finish (at most 40 x 52 + 20 x 15 successes, and 40 more at the edges of
# the windows): it never runs dry. No more: each job is submitted before the run.
BACKLOG = 2500
RETRY = {"max_attempts": 100, "base_delay": "0.1s", "max_delay": "1s"}


def share_and_goodput(records: list[WorkRecord], start: float, end: float) -> tuple[float, float, int]:
    """Over calls started in [start, end): (throttled share, successes per second, calls)."""
    calls = [r for r in records if r.started_at is not None and start <= r.started_at < end]
    ok = sum(1 for r in calls if r.outcome == "success")
    throttled = sum(1 for r in calls if r.outcome == "failure" and "throttled" in (r.error or ""))
    return throttled / max(1, len(calls)), ok / (end - start), len(calls)


async def test_the_adaptive_rate_finds_the_capacity_and_follows_it(database: str, vhost: str) -> None:
    config = make_config(
        database,
        vhost,
        {
            "api": {
                "lease_timeout": "30s",  # the admission TTL is half of it: a busy machine's delays fit
                "retry": RETRY,
                "adaptive": {"enabled": True, "max_rate": "1000/1s"},
            }
        },
    )
    log = RecordLog()
    rates: list[tuple[float, float]] = []  # (when, the adaptive rate the leader shows)

    async def watch_rate(registry: CollectorRegistry) -> None:
        while True:
            value = registry.get_sample_value("janus_adaptive_rate", {"dependency": "api"})
            if value is not None:
                rates.append((time.time(), value))
            await asyncio.sleep(0.1)

    async with running_janus(config) as service:
        watching = asyncio.create_task(watch_rate(service.metrics.registry))
        # The backlog first: with no worker nothing is admitted, and the machine's time goes to
        # the run, not to the intake (a few thousand jobs take seconds to submit here). The
        # producer and Janus share this event loop: submitting most of the backlog during the
        # run was tried, and on a machine loaded to 15-19 it took 18 s and the calls came in
        # bursts of up to 169 a second, 77 % throttled. The worker and the API run in a process
        # of their own, as workers do (sliding_api_worker.py).
        submitting = time.time()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([(f"job-{i}", "api", None, f"tenant-{i % 4}") for i in range(BACKLOG)])
        print(f"\n{BACKLOG} jobs submitted in {time.time() - submitting:.1f} s")
        began = time.time()  # the phases count from the worker's start
        end = began + HIGH + LOW + BACK
        figures = (began, HIGH, LOW, C_HIGH, C_LOW, end)
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.sliding_api_worker",
            vhost,
            *(repr(figure) for figure in figures),
            stdout=asyncio.subprocess.PIPE,
        )
        assert worker.stdout is not None
        try:
            async with asyncio.timeout(HIGH + LOW + BACK + 60):
                async for line in worker.stdout:
                    log.append(WorkRecord(**json.loads(line)))
                assert await worker.wait() == 0
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        watching.cancel()

    records = log.records
    print(timeline(records, began, end))
    # Where goodput went, for a reader of a failure: lost after Janus's decision, or not admitted.
    print("\nper phase, as measured below:")
    for name, (start, stop) in {
        "C=40": (10.0, HIGH),
        "C=20": (HIGH + 10.0, HIGH + LOW),
        "C=40 again": (HIGH + LOW + 20.0, HIGH + LOW + BACK),
    }.items():
        print(f"  {name}: " + where_the_rate_goes(records, rates, began + start, began + stop))
    phases = {
        "C=40, after 10 s of convergence": share_and_goodput(records, began + 10.0, began + HIGH),
        "C=20, from 10 s after the drop": share_and_goodput(records, began + HIGH + 10.0, began + HIGH + LOW),
        "C=40 again, 20-27 s after the rise": share_and_goodput(
            records, began + HIGH + LOW + 20.0, began + HIGH + LOW + BACK
        ),
    }
    print("\nadaptive rate, no static limit, max_rate 1000/1s, measured at the workers:")
    for name, (share, goodput, calls) in phases.items():
        print(f"  {name}: {share:.1%} throttled of {calls} calls, {goodput:.1f} successes/s")
    share, goodput, _ = phases["C=40, after 10 s of convergence"]
    assert share <= 0.05
    assert goodput >= 0.8 * C_HIGH
    share, goodput, _ = phases["C=20, from 10 s after the drop"]
    assert share < 0.05
    assert goodput >= 0.8 * C_LOW  # not asked by the issue: the limit does not collapse either
    share, goodput, _ = phases["C=40 again, 20-27 s after the rise"]
    assert share < 0.05
    assert goodput > 0.8 * C_HIGH


def where_the_rate_goes(
    records: list[WorkRecord], rates: list[tuple[float, float]], start: float, end: float
) -> str:
    """Over [start, end): the adaptive rate in force (its gauge, sampled), the admissions Janus
    made, the calls the worker started, and the successes, each per second; and how long the
    admissions took to start. Where goodput falls short of the rate in force, it was lost after
    Janus's decision (in transit, or a CPU-starved worker); where the rate itself is low, it was
    the controller."""
    span = end - start
    in_force = [value for at, value in rates if start <= at < end]
    admitted = sum(1 for r in records if start <= r.admitted_at < end)
    started = [r for r in records if r.started_at is not None and start <= r.started_at < end]
    ok = sum(1 for r in started if r.outcome == "success")
    lags = sorted(r.started_at - r.admitted_at for r in started if r.started_at is not None)
    lag = lags[int(0.99 * (len(lags) - 1))] if lags else 0.0
    return (
        f"rate in force {sum(in_force) / max(1, len(in_force)):.1f}/s (min {min(in_force, default=0.0):.1f}), "
        f"admitted {admitted / span:.1f}/s, started {len(started) / span:.1f}/s, "
        f"succeeded {ok / span:.1f}/s; admission to start p99 {lag * 1000:.0f} ms"
    )


def timeline(records: list[WorkRecord], began: float, end: float) -> str:
    """Per second from `began`: calls started, of which throttled (for a reader of a failure)."""
    seconds = int(end - began) + 1
    calls, throttled = [0] * seconds, [0] * seconds
    for r in records:
        if r.started_at is not None and began <= r.started_at < end:
            calls[int(r.started_at - began)] += 1
            throttled[int(r.started_at - began)] += r.outcome == "failure"
    return "calls/throttled per second: " + " ".join(
        f"{c}/{t}" for c, t in zip(calls, throttled, strict=True)
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Start:
    """A call's start at the API: the calls then in flight, and when the earliest was admitted."""

    at: float
    in_flight: int
    earliest_admitted: float


class LimitLog:
    """The adaptive concurrency in force in the leader's core, each value with when it was first
    seen: sampled every 10 ms and at every call's start. Read from the core itself, not from its
    gauge: gauges are set at most every 0.1 s (service/observe.py), so a call admitted under a
    raised limit could start while the gauge still showed the lower one (a false alarm in CI)."""

    def __init__(self) -> None:
        self.inspector: Inspector | None = None  # the leader's: its core, replaced by a rebuild
        self.clock: Callable[[], float] = time.time  # the leader's, whose `admitted_at` it is compared with
        self.seen: list[tuple[float, float]] = []

    def sample(self, now: float) -> None:
        scheduler = self.inspector.scheduler if self.inspector is not None else None
        view = scheduler.adaptive_views().get("api") if scheduler is not None else None
        value = view.concurrency if view is not None else None
        if value is not None and (not self.seen or self.seen[-1][1] != value):
            self.seen.append((now, float(value)))

    async def watch(self) -> None:
        while True:
            self.sample(self.clock())
            await asyncio.sleep(0.01)

    def highest(self, since: float, until: float) -> float:
        """The highest limit in force in [since, until]: the one seen last before `since`, and
        every one seen until `until`."""
        before = [value for at, value in self.seen if at <= since][-1:]
        return max(before + [value for at, value in self.seen if since < at <= until], default=0.0)

    def describe(self, began: float) -> str:
        return " ".join(f"{at - began:.1f}:{value:g}" for at, value in self.seen)


KNEE, BASE = 10, 0.5  # the API answers in BASE seconds up to KNEE calls at once (long enough that
# the time an admission spends in transit, on a loaded 2-core machine, is small beside it)


async def test_the_adaptive_concurrency_settles_near_the_knee(database: str, vhost: str) -> None:
    config = make_config(
        database,
        vhost,
        {
            "api": {
                "lease_timeout": "20s",
                "admission_ttl": "5s",
                "retry": RETRY,
                "adaptive": {"enabled": True, "max_concurrency": 200},
            }
        },
    )
    in_flight = 0
    latencies: list[tuple[float, int, float]] = []  # (started, in flight, seconds)
    # The count is the API's own: from the handler's start to its end, which lie inside the
    # admission's hold at the leader (the result is published after the end). The invariant
    # checked on it: calls in flight never exceed the highest limit in force since the earliest
    # of them was admitted (a cut does not recall the calls already running).
    running: dict[str, float] = {}  # job -> admitted_at, of the calls in flight
    starts: list[Start] = []
    limits = LimitLog()

    async def handler(job: ReadyJob) -> None:
        nonlocal in_flight
        in_flight += 1
        running[job.job_id] = job.admitted_at
        took = BASE * max(1.0, in_flight / KNEE) ** 3  # steeply past the knee
        now = limits.clock()
        limits.sample(now)  # the limit of the tick that admitted it, or of a later one
        latencies.append((now, in_flight, took))
        starts.append(Start(at=now, in_flight=in_flight, earliest_admitted=min(running.values())))
        try:
            await asyncio.sleep(took)
        finally:
            in_flight -= 1
            del running[job.job_id]

    log = RecordLog()
    run_for = 50.0
    async with running_janus(config) as service:
        limits.inspector, limits.clock = service.inspector, service.clock
        watching = asyncio.create_task(limits.watch())
        worker = Worker(vhost, {"api": handler}, on_record=log.append, prefetch=300)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([(f"job-{i}", "api", None, "default") for i in range(1500)])
        began = time.time()
        await log.wait_for(
            lambda records: bool(records) and records[-1].received_at >= began + run_for, timeout=run_for + 30
        )
        await worker.stop()
        watching.cancel()

    print("\nadaptive concurrency (s from the run's start:limit): " + limits.describe(began))
    over = [start for start in starts if start.in_flight > limits.highest(start.earliest_admitted, start.at)]
    assert not over, "more calls in flight than any limit in force since they were admitted: " + ", ".join(
        f"{start.in_flight} at {start.at - began:.2f} s" for start in over[:5]
    )
    per_second: dict[int, list[int]] = {}
    for at, n, _ in latencies:
        per_second.setdefault(int(at - began), []).append(n)
    print(
        "\nin flight per second (mean/max): "
        + " ".join(f"{sum(ns) / len(ns):.0f}/{max(ns)}" for _, ns in sorted(per_second.items()))
    )
    late = [(n, took) for at, n, took in latencies if at >= began + 30.0]
    settled = sum(n for n, _ in late) / len(late)
    durations = sorted(
        r.finished_at - r.started_at
        for r in log.records
        if r.started_at is not None and r.finished_at is not None and r.started_at >= began + 30.0
    )
    p99 = durations[int(0.99 * (len(durations) - 1))]
    unloaded = BASE * 1.0  # one call alone; the handler's own overhead comes on top of both
    print(
        f"\nadaptive concurrency, latency {BASE:g}s up to {KNEE} calls then x(n/{KNEE})^3: settles at "
        f"{settled:.1f} calls in flight (max {max(n for n, _ in late)}), p99 {p99:.3f}s = "
        f"{p99 / unloaded:.2f}x the unloaded {unloaded:g}s"
    )
    assert KNEE * 0.6 <= settled <= KNEE * 1.5
    # The bound. A doubling slow start landed up to twice past the knee (16 in flight,
    # 4.1x in one run of three); growing by sqrt(limit), and leaving slow start at the first
    # round above the floor's band, it lands one or two sqrt steps past it (12 or 15 here: a
    # round ends on its first results, the short ones), and is cut by half at once.
    assert p99 <= 2 * unloaded
