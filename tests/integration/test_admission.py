"""Invariants 1-4 end to end, against real RabbitMQ and PostgreSQL, measured from the workers' side."""

from __future__ import annotations

import asyncio
import itertools
import json
import random

import aio_pika
import asyncpg
import pytest

from janus.audit import audit
from janus.broker import topology
from janus.client import Producer, ReadyJob, RetryAfter, Worker
from janus.core.backoff import backoff_ceiling
from janus.protocol import encode_result
from tests.integration.harness import (
    QUEUE_TYPE,
    RecordLog,
    job_rows,
    make_config,
    policies,
    running_janus,
    stalled_consumer,
    succeed,
    wait_for_states,
)

pytestmark = pytest.mark.integration


async def test_rate_and_concurrency_hold_at_the_workers(database: str, vhost: str) -> None:
    config = make_config(
        database,
        vhost,
        {
            "api": {
                "rate_limits": ["25/1s", "60/3s"],
                "concurrency": 4,
                "lease_timeout": "10s",
                "admission_ttl": "0.5s",
                "retry": {"base_delay": "0.1s", "max_delay": "0.5s", "max_attempts": 10},
            },
            "mail": {"concurrency": 2, "lease_timeout": "10s"},
        },
    )
    log = RecordLog()
    rng = random.Random(7)

    async def flaky(job: ReadyJob) -> None:
        await asyncio.sleep(rng.uniform(0.0, 0.06))
        if rng.random() < 0.15:
            raise RuntimeError("the API said no")

    jobs = [(f"api-{i}", "api", {"i": i}, f"tenant-{i % 3}") for i in range(150)]
    jobs += [(f"mail-{i}", "mail", None, "default") for i in range(40)]
    async with running_janus(config):
        worker = Worker(vhost, {"api": flaky, "mail": flaky}, on_record=log.append, prefetch=20)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many(jobs)
        await log.wait_for(lambda _: len(log.succeeded()) == len(jobs), timeout=60)
        await worker.stop()

    report = audit(log.records, policies(config), expected_jobs=[j[0] for j in jobs])
    assert report.ok, report.summary()
    # The limits were actually reached, so holding them says something.
    assert report.dependencies["api"].worst_rate["25/1s"] == 25
    assert report.dependencies["api"].worst_concurrency == 4
    assert report.dependencies["mail"].worst_concurrency == 2
    rows = await job_rows(database)
    assert {row["state"] for row in rows.values()} == {"succeeded"}
    assert any(row["failures"] > 0 for row in rows.values()), "some failures should have been retried"


async def test_retries_follow_backoff_and_dead_jobs_are_kept(database: str, vhost: str) -> None:
    # No retry budget (1.0): this measures per-job backoff alone (test_retry_control.py has the budget).
    retry = {"base_delay": "0.3s", "max_delay": "1s", "jitter": 0.5, "max_attempts": 3, "budget": 1.0}
    config = make_config(database, vhost, {"api": {"lease_timeout": "10s", "retry": retry}})
    log = RecordLog()

    async def fails_twice_or_always(job: ReadyJob) -> None:
        if job.job_id == "doomed" or job.attempt <= 2:
            raise RuntimeError(f"failure {job.attempt}")

    async with running_janus(config):
        worker = Worker(vhost, {"api": fails_twice_or_always}, on_record=log.append)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many(
                [("good-1", "api", None, "a"), ("good-2", "api", None, "b"), ("doomed", "api", None, "a")]
            )
        rows = await wait_for_states(
            database,
            lambda rows: len(rows) == 3 and all(r["state"] in ("succeeded", "dead") for r in rows.values()),
            30,
        )
        await worker.stop()

    policy = config.policies()[0].retry
    by_job: dict[str, list] = {}
    for record in sorted(log.records, key=lambda r: r.admitted_at):
        by_job.setdefault(record.job_id, []).append(record)
    for job_id, records in by_job.items():
        assert [r.attempt for r in records] == list(range(1, len(records) + 1))
        for k, (failed, retried) in enumerate(itertools.pairwise(records), start=1):
            assert failed.outcome == "failure"
            assert failed.finished_at is not None
            d = backoff_ceiling(policy, k)
            gap = retried.admitted_at - failed.finished_at
            # Janus learns of the failure after the worker reports it: the gap can only be longer
            # than Janus's own delay, by the result's trip (generous slack on a shared machine).
            assert d * (1 - policy.jitter) <= gap <= d + 1.0, (job_id, k, gap)
    assert rows["good-1"]["state"] == rows["good-2"]["state"] == "succeeded"
    assert rows["doomed"]["state"] == "dead"
    assert rows["doomed"]["failures"] == 3
    assert rows["doomed"]["last_error"] == "RuntimeError: failure 3"
    assert len(by_job["doomed"]) == 3, "a dead job is never admitted again"


async def test_republished_job_id_is_admitted_once(database: str, vhost: str) -> None:
    config = make_config(database, vhost, {"api": {"lease_timeout": "10s"}})
    log = RecordLog()
    seen_payloads: list[object] = []

    async def handler(job: ReadyJob) -> None:
        seen_payloads.append(job.payload)

    async with running_janus(config):
        worker = Worker(vhost, {"api": handler}, on_record=log.append)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit("same", "api", {"version": 1})
            await producer.submit_many([("same", "api", {"version": n}, "other") for n in range(2, 5)])
            await producer.submit("after", "api")
        await log.wait_for(lambda _: {"same", "after"} <= log.succeeded(), timeout=20)
        await worker.stop()
    assert seen_payloads.count({"version": 1}) == 1
    assert {"version": 2} not in seen_payloads
    assert [r.job_id for r in log.records].count("same") == 1
    rows = await job_rows(database)
    assert rows["same"]["scope"] == "default"


async def test_unused_admissions_come_back_and_cost_no_attempt(database: str, vhost: str) -> None:
    """A stalled worker at first: admissions expire in the queue, dead-letter to Janus, free their slot."""
    config = make_config(
        database,
        vhost,
        {"api": {"concurrency": 2, "admission_ttl": "0.3s", "lease_timeout": "60s"}},
    )
    log = RecordLog()

    async with running_janus(config):
        async with stalled_consumer(vhost, "api"):
            async with await Producer.connect(vhost) as producer:
                await producer.submit_many([(f"job-{i}", "api", None, "default") for i in range(4)])
            # Each job is admitted, expires unused and comes back, again and again.
            await wait_for_states(
                database, lambda rows: len(rows) == 4 and max(r["attempt"] for r in rows.values()) >= 3, 20
            )
        worker = Worker(vhost, {"api": succeed}, on_record=log.append)
        await worker.start()
        # With a 60 s lease, finishing in seconds proves the expiries released the slots.
        await log.wait_for(lambda _: len(log.succeeded()) == 4, timeout=20)
        await worker.stop()
        # The worker's results are confirmed by the broker; Janus commits them a tick later.
        rows = await wait_for_states(
            database, lambda rows: all(row["state"] == "succeeded" for row in rows.values()), 20
        )
    assert all(row["failures"] == 0 for row in rows.values()), "an unused admission is not an attempt"
    report = audit(log.records, policies(config))
    assert report.ok, report.summary()


async def test_a_worker_that_never_reports_loses_its_lease(database: str, vhost: str) -> None:
    config = make_config(
        database,
        vhost,
        {
            "api": {
                "concurrency": 1,
                "admission_ttl": "0.5s",
                "lease_timeout": "1.5s",
                "retry": {"base_delay": "0.1s"},
            }
        },
    )
    log = RecordLog()
    taken = asyncio.Event()

    async def hangs(job: ReadyJob) -> None:
        taken.set()
        await asyncio.sleep(3600)

    async with running_janus(config):
        crashing = Worker(vhost, {"api": hangs})
        await crashing.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit("stuck", "api")
        await asyncio.wait_for(taken.wait(), timeout=10)
        await crashing.abort()  # acked, never reports: like a worker killed mid-job
        healthy = Worker(vhost, {"api": succeed}, on_record=log.append)
        await healthy.start()
        await log.wait_for(lambda _: "stuck" in log.succeeded(), timeout=15)
        await healthy.stop()
    rows = await job_rows(database)
    assert rows["stuck"]["failures"] == 1
    assert rows["stuck"]["attempt"] == 2
    # The slot came back no sooner than the lease allows (1.5 s), with concurrency 1.
    connection = await asyncpg.connect(database)
    try:
        first, second = [
            row[0]
            for row in await connection.fetch("SELECT admitted_at FROM janus.admissions ORDER BY attempt")
        ]
    finally:
        await connection.close()
    assert second - first >= 1.5
    assert log.records[0].admitted_at == second


async def test_a_worker_handler_is_cut_off_before_its_lease_ends(database: str, vhost: str) -> None:
    """The SDK worker never runs past the lease: worker-side concurrency holds even with a slow handler."""
    config = make_config(
        database,
        vhost,
        {
            "api": {
                "concurrency": 1,
                "admission_ttl": "0.5s",
                "lease_timeout": "1s",
                "retry": {"base_delay": "0.1s", "max_attempts": 2},
            }
        },
    )
    log = RecordLog()

    async def too_slow(job: ReadyJob) -> None:
        await asyncio.sleep(5)

    async with running_janus(config):
        worker = Worker(vhost, {"api": too_slow}, on_record=log.append)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([("slow-1", "api", None, "a"), ("slow-2", "api", None, "a")])
        await wait_for_states(
            database, lambda rows: len(rows) == 2 and all(r["state"] == "dead" for r in rows.values()), 20
        )
        await worker.stop()
    for record in log.records:
        assert record.finished_at is not None
        assert record.finished_at < record.admitted_at + 1.0
    report = audit(log.records, policies(config))
    assert report.dependencies["api"].worst_concurrency == 1


async def test_bad_input_is_set_aside_and_the_rest_flows(database: str, vhost: str) -> None:
    config = make_config(database, vhost, {"api": {"lease_timeout": "10s"}})
    log = RecordLog()

    garbage = [
        (b"\xff\xfe not utf-8", "application/json", "malformed_json"),
        (b"{not json", "application/json", "malformed_json"),
        (b"[1, 2]", "application/json", "not_an_object"),
        (b'{"dependency": "api"}', "application/json", "invalid_fields"),
        (b'{"job_id": 5, "dependency": "api"}', "application/json", "invalid_fields"),
        (b'{"job_id": "x", "dependency": "nope"}', "application/json", "unknown_dependency"),
        (b'{"job_id": "y", "dependency": "api"}', "application/json", "routing_mismatch"),  # key "mail"
        (
            json.dumps({"job_id": "big", "dependency": "api", "payload": "x" * 70_000}).encode(),
            "application/json",
            "payload_too_large",
        ),
        (b'{"job_id": "x", "dependency": "api"}', "text/plain", "wrong_content_type"),
        # PostgreSQL cannot store U+0000 in jsonb: refused up front, not a failed batch.
        (
            b'{"job_id": "nul", "dependency": "api", "payload": "\\u0000"}',
            "application/json",
            "invalid_fields",
        ),
        (b'{"job_id": "nan", "dependency": "api", "payload": NaN}', "application/json", "invalid_fields"),
        (
            b'{"job_id": "huge", "dependency": "api", "payload": "' + b"x" * 300_000 + b'"}',
            "application/json",
            "message_too_large",
        ),
    ]
    async with running_janus(config):
        worker = Worker(vhost, {"api": succeed}, on_record=log.append)
        await worker.start()
        connection = await aio_pika.connect(vhost)
        channel = await connection.channel(publisher_confirms=True)
        intake = await channel.get_exchange(topology.INTAKE_EXCHANGE)
        async with await Producer.connect(vhost) as producer:
            for i, (body, content_type, reason) in enumerate(garbage):
                await producer.submit(f"good-{i}", "api")
                # Routed by the body's dependency, as producers must, except for the one row
                # that tests a key naming another dependency.
                key = "nope" if b'"nope"' in body else "mail" if reason == "routing_mismatch" else "api"
                await intake.publish(aio_pika.Message(body, content_type=content_type), routing_key=key)
            # A result that is not JSON, and one for a job that does not exist: neither changes
            # anything, both are set aside.
            results = await channel.get_exchange(topology.RESULTS_EXCHANGE)
            await results.publish(aio_pika.Message(b"garbage"), routing_key="api")
            await results.publish(
                aio_pika.Message(b'{"job_id": "ghost", "attempt": 1, "outcome": "success"}'),
                routing_key="api",
            )
        await log.wait_for(lambda _: len(log.succeeded()) == len(garbage), timeout=20)
        await worker.stop()
        rejected = await channel.get_queue(topology.REJECTED_QUEUE)
        expected = [(reason, "intake") for _, _, reason in garbage]
        expected += [("malformed_json", "results"), ("unknown_job", "results")]
        reasons: list[tuple[str, str]] = []
        # Set-asides are published in the background, after the ticks that decided them: the
        # last may come after the last good job's success.
        async with asyncio.timeout(20):
            while len(reasons) < len(expected):
                message = await rejected.get(no_ack=True, fail=False)
                if message is None:
                    await asyncio.sleep(0.05)  # basic.get has nothing to wait on
                    continue
                headers = message.headers
                reasons.append((str(headers[topology.REASON_HEADER]), str(headers[topology.SOURCE_HEADER])))
        await connection.close()
    assert sorted(reasons) == sorted(expected)
    rows = await job_rows(database)
    assert set(rows) == {f"good-{i}" for i in range(len(garbage))}


async def test_retry_after_delays_the_job(database: str, vhost: str) -> None:
    config = make_config(
        database,
        vhost,
        {"api": {"lease_timeout": "10s", "retry": {"base_delay": "0.05s", "max_delay": "5s"}}},
    )
    log = RecordLog()

    async def throttled(job: ReadyJob) -> None:
        if job.attempt == 1:
            raise RetryAfter(1.0)

    async with running_janus(config):
        worker = Worker(vhost, {"api": throttled}, on_record=log.append)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit("polite", "api")
        await log.wait_for(lambda _: "polite" in log.succeeded(), timeout=15)
        await worker.stop()
    first, second = sorted(log.records, key=lambda r: r.attempt)
    assert first.finished_at is not None
    assert second.admitted_at - first.finished_at >= 1.0


async def test_admissions_the_broker_refuses_cost_no_attempt(database: str, vhost: str) -> None:
    """With the ready queue unbound, every publish comes back unroutable: the job waits again, uncharged."""
    config = make_config(
        database, vhost, {"api": {"rate_limits": ["20/1s"], "concurrency": 3, "lease_timeout": "60s"}}
    )
    log = RecordLog()

    async with running_janus(config) as service:
        connection = await aio_pika.connect(vhost)
        channel = await connection.channel()
        # Unbound rather than deleted: a worker still consumes it, so Janus admits (no_worker aside).
        ready = await channel.get_queue(topology.ready_queue("api"), ensure=True)
        await ready.unbind(topology.READY_EXCHANGE, routing_key="api")
        worker = Worker(vhost, {"api": succeed}, on_record=log.append)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([(f"job-{i}", "api", None, "default") for i in range(3)])
        rows = await wait_for_states(
            database, lambda rows: len(rows) == 3 and min(r["attempt"] for r in rows.values()) >= 2, 20
        )
        assert all(row["failures"] == 0 for row in rows.values())
        refused = service.metrics.registry.get_sample_value(
            "janus_publish_failures_total", {"dependency": "api"}
        )
        assert refused is not None
        assert refused >= 3
        await topology.declare_ready_queue(channel, "api", QUEUE_TYPE)  # bound again
        await connection.close()
        # All 3 slots are taken by each round; with a 60 s lease, re-admission proves refusals free them.
        await log.wait_for(lambda _: len(log.succeeded()) == 3, timeout=20)
        await worker.stop()
    rows = await job_rows(database)
    assert all(row["failures"] == 0 and row["state"] == "succeeded" for row in rows.values())


async def test_the_sdk_worker_runs_at_most_max_in_flight_handlers(database: str, vhost: str) -> None:
    config = make_config(database, vhost, {"api": {"lease_timeout": "30s"}})  # no concurrency limit
    log = RecordLog()

    async def handler(job: ReadyJob) -> None:
        await asyncio.sleep(0.1)

    async with running_janus(config):
        worker = Worker(vhost, {"api": handler}, on_record=log.append, prefetch=10, max_in_flight=2)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([(f"job-{i}", "api", None, "default") for i in range(10)])
        await log.wait_for(lambda _: len(log.succeeded()) == 10, timeout=20)
        await worker.stop()
    report = audit(log.records, policies(config))
    assert report.dependencies["api"].worst_concurrency == 2


async def test_a_finished_job_published_again_never_runs_again(database: str, vhost: str) -> None:
    """The core forgets finished jobs; the store remembers, and the repeat is retracted unpublished."""
    config = make_config(database, vhost, {"api": {"lease_timeout": "10s"}})
    log = RecordLog()

    async with running_janus(config) as service:
        worker = Worker(vhost, {"api": succeed}, on_record=log.append)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit("once", "api", {"v": 1})
            await log.wait_for(lambda _: "once" in log.succeeded(), timeout=20)
            await wait_for_states(database, lambda rows: rows["once"]["state"] == "succeeded", 10)
            await producer.submit_many([("once", "api", {"v": n}, "default") for n in range(2, 6)])
            await producer.submit("after", "api")
            await log.wait_for(lambda _: "after" in log.succeeded(), timeout=20)
        await worker.stop()
        duplicates = service.metrics.registry.get_sample_value(
            "janus_intake_messages_total", {"outcome": "duplicate"}
        )
    assert [r.job_id for r in log.records].count("once") == 1
    assert duplicates == 4
    connection = await asyncpg.connect(database)
    try:
        admissions = await connection.fetch(
            "SELECT job_id, attempt FROM janus.admissions WHERE job_id = 'once'"
        )
    finally:
        await connection.close()
    assert [tuple(row) for row in admissions] == [("once", 1)]


async def test_a_stale_result_changes_nothing(database: str, vhost: str) -> None:
    """A forged success for an attempt that already failed must neither finish the job nor free a slot."""
    config = make_config(
        database, vhost, {"api": {"concurrency": 1, "lease_timeout": "10s", "retry": {"base_delay": "0.5s"}}}
    )
    log = RecordLog()
    connection = await aio_pika.connect(vhost)
    channel = await connection.channel(publisher_confirms=True)

    async def fails_first_then_forges(job: ReadyJob) -> None:
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")

    async with running_janus(config) as service:
        results = await channel.get_exchange(topology.RESULTS_EXCHANGE)
        worker = Worker(vhost, {"api": fails_first_then_forges}, on_record=log.append)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit("target", "api")
            # Once Janus has recorded the failure, attempt 1 is stale.
            await wait_for_states(
                database, lambda rows: rows.get("target") is not None and rows["target"]["failures"] == 1, 20
            )
            forged = encode_result(job_id="target", attempt=1, outcome="success")
            await results.publish(
                aio_pika.Message(forged, content_type="application/json"), routing_key="api"
            )
            await log.wait_for(lambda _: "target" in log.succeeded(), timeout=20)
        await worker.stop()
        stale = service.metrics.registry.get_sample_value(
            "janus_job_events_total", {"source": "result", "verdict": "stale_attempt"}
        )
    await connection.close()
    assert [(r.attempt, r.outcome) for r in log.records] == [(1, "failure"), (2, "success")]
    assert stale == 1
    rows = await job_rows(database)
    assert (rows["target"]["state"], rows["target"]["attempt"], rows["target"]["failures"]) == (
        "succeeded",
        2,
        1,
    )


async def test_ticks_observe_their_wait_and_their_write(database: str, vhost: str) -> None:
    config = make_config(database, vhost, {"api": {}})
    log = RecordLog()
    async with running_janus(config) as service:
        worker = Worker(vhost, {"api": succeed}, on_record=log.append)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            for i in range(5):
                await producer.submit(f"job-{i}", "api")
        await log.wait_for(lambda _: len(log.succeeded()) == 5, timeout=20)
        await worker.stop()
        registry = service.metrics.registry
        waits = registry.get_sample_value("janus_tick_wait_seconds_count")
        writes = registry.get_sample_value("janus_tick_write_seconds_count")
        # Each job's intake and its result waited for a tick; each of those ticks wrote.
        assert waits is not None
        assert waits >= 2
        assert writes is not None
        assert writes >= 2
        assert (registry.get_sample_value("janus_tick_write_seconds_sum") or 0.0) > 0.0
