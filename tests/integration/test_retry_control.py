"""Retry control end to end, against real RabbitMQ and PostgreSQL, measured at the workers.

- An outage: the simulated API fails everything for OUTAGE seconds while 1,000 jobs are in
  flight and new ones keep arriving. With the circuit and the retry budget, admissions
  during the outage fall to the circuit's probes and retries stay within the budget; after
  recovery every job completes. The same run without them shows the storm they prevent.
- A worker answering retry_after = 5 pauses the whole dependency for 5 s (and no other).
- Dead jobs: error history, outcomes on janus.outcomes, `janus jobs retry`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
import pytest

from janus.audit import audit, retry_budget_excess
from janus.broker import topology
from janus.client import Producer, ReadyJob, RetryAfter, Worker
from janus.protocol import decode_outcome
from janus.store.repository import Store
from tests.integration.harness import RecordLog, janus_cli, job_rows, make_config, policies, running_janus
from tests.services import Services

pytestmark = pytest.mark.integration

OUTAGE = 10.0  # seconds the API fails every call (the figure, not scaled down)
IN_FLIGHT = 1000  # jobs submitted as the outage starts
ARRIVALS_PER_SECOND = 20  # new jobs keep coming during the outage and a little after
CONCURRENCY = 50
CIRCUIT = {
    "failure_threshold": 0.5,
    "min_outcomes": 20,
    "window": "5s",
    "open_for": "1s",
    "max_open_for": "2s",
    "half_open_probes": 3,
}
RETRY = {
    "max_attempts": 50,  # nobody dies of the outage: the point is how hard the API is hit
    "base_delay": "0.2s",
    "max_delay": "2s",
    "budget": 0.2,
    "budget_window": "2s",
    "min_retries": 2,
}


class ApiDown(Exception):
    pass


@dataclass(kw_only=True)
class OutageRun:
    calls_during_outage: int
    admissions_during_outage: int
    opening_wave: int  # admissions before the first quiet gap (the circuit opening)
    largest_later_burst: int  # after that, the most admissions between quiet gaps
    retries: int
    budget_excess: int
    jobs: int
    seconds_to_finish_after_outage: float


@asynccontextmanager
async def isolated(services: Services, label: str) -> AsyncIterator[tuple[str, str]]:
    """A database and a vhost of their own, like the fixtures' (one test compares two runs)."""
    name = f"{label}_{uuid.uuid4().hex[:6]}"
    await services.create_database(f"jt_{name}")
    await services.create_vhost(f"janus-test-{name}")
    try:
        yield services.pg_dsn(f"jt_{name}"), services.amqp_url(f"janus-test-{name}")
    finally:
        await services.drop_database(f"jt_{name}")
        await services.delete_vhost(f"janus-test-{name}")


def bursts(stamps: list[float], quiet: float) -> list[int]:
    """Sizes of the groups of `stamps` separated by gaps of at least `quiet` seconds."""
    groups: list[int] = []
    last = None
    for stamp in sorted(stamps):
        if last is None or stamp - last >= quiet:
            groups.append(0)
        groups[-1] += 1
        last = stamp
    return groups


async def run_outage(database: str, vhost: str, *, protected: bool) -> OutageRun:
    retry: dict[str, Any] = dict(RETRY) if protected else {**RETRY, "budget": 1.0}
    circuit: dict[str, Any] = dict(CIRCUIT) if protected else {**CIRCUIT, "enabled": False}
    config = make_config(
        database,
        vhost,
        {
            "api": {
                "concurrency": CONCURRENCY,
                "lease_timeout": "10s",
                "admission_ttl": "2s",
                "retry": retry,
                "circuit": circuit,
            }
        },
    )
    log = RecordLog()
    outage: list[float] = []

    async def api(job: ReadyJob) -> None:
        await asyncio.sleep(0.005)
        if outage[0] <= time.time() < outage[1]:
            raise ApiDown("503 Service Unavailable")

    expected: list[str] = []
    async with running_janus(config):
        worker = Worker(vhost, {"api": api}, on_record=log.append, prefetch=CONCURRENCY * 2)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            start = time.time()
            outage[:] = [start, start + OUTAGE]
            first = [(f"job-{i}", "api", {"i": i}, f"tenant-{i % 4}") for i in range(IN_FLIGHT)]
            await producer.submit_many(first)
            expected += [job[0] for job in first]
            arrivals = 0
            while time.time() < outage[1] + 2.0:
                arrivals += 1
                await producer.submit(f"new-{arrivals}", "api", None, scope="tenant-new")
                expected.append(f"new-{arrivals}")
                await asyncio.sleep(1.0 / ARRIVALS_PER_SECOND)
        await log.wait_for(lambda _: len(log.succeeded()) == len(expected), timeout=90)
        finished = time.time()
        await worker.stop()

    records = log.records
    report = audit(records, policies(config), expected_jobs=expected)
    assert report.ok, report.summary()
    assert not report.lost
    rows = await job_rows(database)
    assert len(rows) == len(expected)
    assert {row["state"] for row in rows.values()} == {"succeeded"}

    during = [r for r in records if r.started_at is not None and outage[0] <= r.started_at < outage[1]]
    admitted_during = sorted(r.admitted_at for r in records if outage[0] <= r.admitted_at < outage[1])
    groups = bursts(admitted_during, quiet=0.5)
    failed_jobs = {r.job_id for r in records if r.outcome == "failure"}
    retries = sum(1 for r in records if r.job_id in failed_jobs and r.attempt > 1)
    # Judged by the protected run's budget either way: the unprotected run shows what it stops.
    [judge] = make_config(database, vhost, {"api": {"retry": RETRY, "circuit": CIRCUIT}}).policies()
    return OutageRun(
        calls_during_outage=len(during),
        admissions_during_outage=len(admitted_during),
        opening_wave=groups[0] if groups else 0,
        largest_later_burst=max(groups[1:], default=0),
        retries=retries,
        budget_excess=retry_budget_excess(records, judge),
        jobs=len(expected),
        seconds_to_finish_after_outage=finished - outage[1],
    )


async def test_an_outage_meets_the_circuit_and_the_budget_not_a_storm(services: Services) -> None:
    async with isolated(services, "outage_protected") as (database, vhost):
        protected = await run_outage(database, vhost, protected=True)
    async with isolated(services, "outage_unprotected") as (database, vhost):
        unprotected = await run_outage(database, vhost, protected=False)
    print(
        f"\nAPI calls during a {OUTAGE:g}s outage ({IN_FLIGHT} jobs in flight, "
        f"{ARRIVALS_PER_SECOND}/s arriving):\n"
        f"  with circuit and retry budget:    {protected}\n"
        f"  without (budget 1.0, no circuit): {unprotected}"
    )
    # Admissions during the outage fall to the circuit's probes: the wave before it opened
    # (at most the slots plus the outcomes it takes to open), then bursts of its probes.
    assert protected.opening_wave <= CONCURRENCY + CIRCUIT["min_outcomes"]  # type: ignore[operator]
    assert protected.largest_later_burst <= CIRCUIT["half_open_probes"]
    probe_periods = int(OUTAGE / 1.0)  # open_for is at least 1 s
    assert protected.admissions_during_outage <= (
        CONCURRENCY + CIRCUIT["min_outcomes"] + CIRCUIT["half_open_probes"] * probe_periods  # type: ignore[operator]
    )
    # Retries never exceed the budget (seen from the workers); without one they do.
    assert protected.budget_excess <= 0
    assert unprotected.budget_excess > 0
    # The storm it prevents.
    # (The storm is as big as the machine lets Janus make it: 983 to 5,330 calls measured here.)
    assert unprotected.calls_during_outage > 5 * protected.calls_during_outage


async def test_retry_after_pauses_the_whole_dependency(database: str, vhost: str) -> None:
    config = make_config(
        database,
        vhost,
        {
            "api": {"concurrency": 4, "lease_timeout": "10s", "retry": {"base_delay": "0.1s"}},
            "other": {"concurrency": 2, "lease_timeout": "10s"},
        },
    )
    log = RecordLog()

    async def api(job: ReadyJob) -> None:
        if job.job_id == "overloaded" and job.attempt == 1:
            raise RetryAfter(5.0, "429 Too Many Requests")
        await asyncio.sleep(0.05)

    async def other(job: ReadyJob) -> None:
        await asyncio.sleep(0.01)

    api_jobs = ["overloaded", *(f"api-{i}" for i in range(60))]
    async with running_janus(config):
        worker = Worker(vhost, {"api": api, "other": other}, on_record=log.append, prefetch=10)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit("overloaded", "api")
            await producer.submit_many([(job, "api", None, "default") for job in api_jobs[1:]])
            await log.wait_for(
                lambda records: any(r.job_id == "overloaded" and r.outcome == "failure" for r in records), 20
            )
            # While api is paused, another dependency runs as usual.
            await producer.submit_many([(f"other-{i}", "other", None, "default") for i in range(20)])
        await log.wait_for(lambda _: len(log.succeeded()) == len(api_jobs) + 20, timeout=40)
        await worker.stop()

    records = log.records
    [failure] = [r for r in records if r.job_id == "overloaded" and r.outcome == "failure"]
    assert failure.finished_at is not None
    told = failure.finished_at  # when the worker learned "retry after 5 s"
    # Janus learns a moment later; admissions it made before that are not the pause's to stop.
    later = sorted(r.admitted_at for r in records if r.dependency == "api" and r.admitted_at > told + 0.5)
    resumed = later[0]
    print(f"\napi paused for {resumed - told:.2f}s after retry_after = 5 (measured at the workers)")
    assert resumed - told >= 5.0, "nothing of api may be admitted during the pause"
    assert resumed - told <= 5.0 + 2.0, "the pause ends when it should"
    retried = [r for r in records if r.job_id == "overloaded" and r.attempt == 2]
    assert retried
    assert retried[0].admitted_at >= told + 5.0, "the job's own next attempt waits too"
    others = [r.admitted_at for r in records if r.dependency == "other"]
    assert min(others) < told + 5.0, "another dependency is not paused"
    report = audit(records, policies(config), expected_jobs=[*api_jobs, *(f"other-{i}" for i in range(20))])
    assert report.ok, report.summary()


@asynccontextmanager
async def outcomes_subscriber(
    vhost: str, binding: str, on_outcome: Callable[[aio_pika.abc.AbstractIncomingMessage], Awaitable[None]]
) -> AsyncIterator[None]:
    """A queue of our own bound to janus.outcomes, consumed by `on_outcome`, for the block's length."""
    subscriber = await aio_pika.connect(vhost)
    try:
        channel = await subscriber.channel()
        exchange = await channel.get_exchange(topology.OUTCOMES_EXCHANGE, ensure=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key=binding)
        await queue.consume(on_outcome)
        yield
    finally:
        await subscriber.close()


async def test_dead_jobs_keep_their_errors_publish_outcomes_and_can_be_retried(
    database: str, vhost: str
) -> None:
    config = make_config(
        database,
        vhost,
        {"api": {"lease_timeout": "10s", "retry": {"max_attempts": 3, "base_delay": "0.05s", "budget": 1.0}}},
    )
    log = RecordLog()
    healthy = asyncio.Event()

    async def api(job: ReadyJob) -> None:
        if job.job_id.startswith("doomed") and not healthy.is_set():
            raise RuntimeError(f"declined on attempt {job.attempt}")

    outcomes: list[tuple[str, dict[str, Any]]] = []
    got_outcome = asyncio.Condition()

    async def on_outcome(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            outcomes.append((message.routing_key or "", json.loads(message.body)))
            decode_outcome(message.body)  # the message follows the documented schema
            async with got_outcome:
                got_outcome.notify_all()

    async def wait_outcomes(count: int) -> None:
        async with asyncio.timeout(30), got_outcome:
            await got_outcome.wait_for(lambda: len(outcomes) >= count)

    async with running_janus(config), outcomes_subscriber(vhost, "api.*", on_outcome):
        worker = Worker(vhost, {"api": api}, on_record=log.append)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many(
                [("fine", "api", None, "a"), ("doomed-a", "api", None, "a"), ("doomed-b", "api", None, "b")]
            )
        await wait_outcomes(3)
        by_job = {body["job_id"]: (key, body) for key, body in outcomes}
        assert by_job["fine"][0] == "api.succeeded"
        key, dead = by_job["doomed-a"]
        assert key == "api.dead"
        assert dead["failures"] == 3
        assert dead["error"] == "RuntimeError: declined on attempt 3"

        store = await Store.connect(database)
        try:
            history = await store.error_history("doomed-a")
        finally:
            await store.close()
        assert [(f.attempt, f.error) for f in history] == [
            (n, f"RuntimeError: declined on attempt {n}") for n in (1, 2, 3)
        ]

        healthy.set()
        code, out, err = await janus_cli("jobs", "retry", "fine", database=database)
        assert code == 2
        assert "is succeeded, not dead" in err
        code, out, err = await janus_cli("jobs", "retry", "doomed-a", database=database)
        assert code == 0, err
        assert "made 1 dead job eligible again" in out
        code, out, err = await janus_cli(
            "jobs", "retry", "--dependency", "api", "--scope", "b", database=database
        )
        assert code == 0, err
        assert "made 1 dead job eligible again" in out
        await wait_outcomes(5)
        await worker.stop()

    keys = [(key, body["job_id"]) for key, body in outcomes[3:]]
    assert sorted(keys) == [("api.succeeded", "doomed-a"), ("api.succeeded", "doomed-b")]
    rows = await job_rows(database)
    assert rows["doomed-a"]["state"] == "succeeded"
    assert rows["doomed-a"]["failures"] == 0, "a retried dead job starts with its attempts reset"
    assert rows["doomed-a"]["attempt"] == 4, "attempt numbers go on, so old results stay stale"
    code, out, err = await janus_cli("jobs", "show", "doomed-a", database=database)
    assert code == 0, err
    assert "succeeded on try 1 (admission 4)" in out  # a new life: no failed try in it
    assert re.search(r"admission 3 at \S+Z: RuntimeError: declined on attempt 3", out), out


async def test_a_pause_and_an_open_circuit_outlive_their_leader(database: str, vhost: str) -> None:
    """The leader that saw the failures stops; the next one must go on with the pause and the
    open circuit it finds in PostgreSQL (measured at the workers)."""
    config = make_config(
        database,
        vhost,
        {
            "paused": {"lease_timeout": "10s", "retry": {"max_retry_after": "1m"}},
            "broken": {
                "lease_timeout": "10s",
                "retry": {"budget": 1.0},
                "circuit": {"min_outcomes": 2, "open_for": "4s", "half_open_probes": 1},
            },
        },
    )
    log = RecordLog()

    async def paused(job: ReadyJob) -> None:
        if job.job_id == "told" and job.attempt == 1:
            raise RetryAfter(4.0)

    async def broken(job: ReadyJob) -> None:
        if job.job_id.startswith("down"):
            raise ApiDown("503")

    worker = Worker(vhost, {"paused": paused, "broken": broken}, on_record=log.append)
    async with running_janus(config):
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many(
                [
                    ("told", "paused", None, "default"),
                    ("down-1", "broken", None, "d"),
                    ("down-2", "broken", None, "d"),
                ]
            )
        await log.wait_for(lambda records: sum(r.outcome == "failure" for r in records) >= 3, timeout=20)
        rows: dict[str, Any] = {}
        async with asyncio.timeout(10):
            while len(rows) < 2:  # both gates committed
                connection = await asyncpg.connect(database)
                try:
                    rows = {
                        r["dependency"]: r
                        for r in await connection.fetch("SELECT * FROM janus.dependency_gates")
                    }
                finally:
                    await connection.close()
                await asyncio.sleep(0.05)
    assert rows["broken"]["circuit_state"] == "open"
    pause_until, open_until = rows["paused"]["pause_until"], rows["broken"]["open_until"]
    restarted = time.time()
    assert restarted < min(pause_until, open_until) - 1.0, "the test needs time left in both"
    async with running_janus(config):
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many(
                [
                    *((f"p-{i}", "paused", None, "default") for i in range(5)),
                    *((f"b-{i}", "broken", None, "d") for i in range(5)),
                ]
            )
        expected = {"told", *(f"p-{i}" for i in range(5)), *(f"b-{i}" for i in range(5))}
        await log.wait_for(lambda _: expected <= log.succeeded(), timeout=30)
        await worker.stop()
    after = [r for r in log.records if r.admitted_at >= restarted]
    first_paused = min(r.admitted_at for r in after if r.dependency == "paused")
    first_broken = sorted(r.admitted_at for r in after if r.dependency == "broken")
    print(
        f"\nnew leader: paused admitted again {first_paused - pause_until:+.2f}s after its pause ended; "
        f"broken probed {first_broken[0] - open_until:+.2f}s after its open period"
    )
    assert first_paused >= pause_until
    assert first_broken[0] >= open_until
    # Half-open: one probe; only its success lets the rest through.
    probe = [r for r in after if r.dependency == "broken" and r.admitted_at == first_broken[0]]
    assert len(probe) == 1


async def test_outcomes_publishes_only_the_kinds_configured(database: str, vhost: str) -> None:
    """`outcomes = ["dead"]`: successes are not published. One channel carries every outcome in
    the order of the ticks, so once the dead job's outcome (later) is in, a success outcome
    would be too."""
    config = make_config(
        database,
        vhost,
        {
            "api": {
                "lease_timeout": "10s",
                "retry": {"max_attempts": 2, "base_delay": "0.05s", "budget": 1.0},
                "outcomes": ["dead"],
            }
        },
    )
    log = RecordLog()

    async def api(job: ReadyJob) -> None:
        if job.job_id == "doomed":
            raise RuntimeError("declined")

    keys: list[str] = []
    got_outcome = asyncio.Event()

    async def on_outcome(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            keys.append(message.routing_key or "")
            got_outcome.set()

    async with running_janus(config), outcomes_subscriber(vhost, "#", on_outcome):
        worker = Worker(vhost, {"api": api}, on_record=log.append)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit("fine", "api", None, scope="a")
            await log.wait_for(lambda records: any(r.job_id == "fine" for r in records), timeout=30)
            await producer.submit("doomed", "api", None, scope="a")
        await asyncio.wait_for(got_outcome.wait(), timeout=30)
        await worker.stop()
    assert keys == ["api.dead"]
