"""The SDK for code that is not async: plain functions as handlers (with the lease cut-off they
cannot be killed by), the Worker as a context manager, Throttled, and SyncProducer."""

from __future__ import annotations

import asyncio
import threading

import aio_pika
import pytest

from janus.broker import topology
from janus.client import ReadyJob, SyncProducer, Throttled, Worker, submit
from janus.errors import BrokerError, ProtocolError
from tests.integration.harness import (
    RecordLog,
    eventually,
    job_rows,
    make_config,
    running_janus,
    wait_for_states,
)

pytestmark = pytest.mark.integration


def submit_all(url: str, jobs: list[tuple[str, str, None, str]]) -> None:
    with SyncProducer(url) as producer:
        producer.submit_many(jobs)


async def test_plain_functions_and_coroutines_as_handlers(database: str, vhost: str) -> None:
    config = make_config(
        database, vhost, {"plain": {"lease_timeout": "10s"}, "coro": {"lease_timeout": "10s"}}
    )
    log = RecordLog()
    threads: dict[str, str] = {}

    def plain(job: ReadyJob) -> None:  # blocking code: it must not run on the event loop
        threads[job.job_id] = threading.current_thread().name

    async def coro(job: ReadyJob) -> None:
        threads[job.job_id] = threading.current_thread().name

    handlers = {"plain": plain, "coro": coro}
    async with running_janus(config), Worker(vhost, handlers, on_record=log.append, max_in_flight=2):
        jobs = [("p-1", "plain", None, "default"), ("p-2", "plain", None, "default")]
        await asyncio.to_thread(submit_all, vhost, [*jobs, ("c-1", "coro", None, "default")])
        await log.wait_for(lambda _: len(log.succeeded()) == 3, timeout=20)
    main = threading.main_thread().name
    assert threads["c-1"] == main
    assert {threads["p-1"], threads["p-2"]} <= {"janus-worker-thread-0", "janus-worker-thread-1"}
    assert all(record.try_number == 1 for record in log.records)


async def test_a_plain_function_past_its_lease_is_reported_at_the_cut_off_and_keeps_its_slot(
    database: str, vhost: str
) -> None:
    config = make_config(
        database,
        vhost,
        {"api": {"lease_timeout": "1s", "admission_ttl": "0.5s", "retry": {"max_attempts": 1}}},
    )
    log = RecordLog()
    release = threading.Event()
    started: list[str] = []

    def stuck(job: ReadyJob) -> None:
        started.append(job.job_id)
        if job.job_id == "stuck":
            release.wait(30)  # a blocking call that ignores the lease: nothing can stop it

    async with running_janus(config) as service:
        worker = Worker(vhost, {"api": stuck}, on_record=log.append, prefetch=1, max_in_flight=1)
        async with worker:
            await asyncio.to_thread(submit, "stuck", "api", amqp_url=vhost)
            await log.wait_for(lambda records: any(r.job_id == "stuck" for r in records), timeout=20)
            (record,) = log.records
            assert (record.outcome, record.error) == ("failure", "handler did not finish within the lease")
            assert record.finished_at is not None
            assert record.started_at is not None
            assert record.finished_at - record.started_at < 1.0, "reported before the lease ended"
            assert worker.overrunning == 1
            # Its thread and slot stay taken: the next job waits unstarted until the function returns.
            await asyncio.to_thread(submit, "next", "api", amqp_url=vhost)
            await wait_for_states(database, lambda rows: rows.get("stuck", {}).get("state") == "dead", 10)
            assert started == ["stuck"]
            release.set()
            await log.wait_for(lambda _: "next" in log.succeeded(), timeout=20)
            await eventually(lambda: worker.overrunning == 0, 10)
        rows = await job_rows(database)
        assert rows["stuck"]["last_error"] == "handler did not finish within the lease"
        # The function's late return published nothing: no second result was set aside.
        assert (
            service.metrics.registry.get_sample_value(
                "janus_rejected_messages_total", {"source": "results", "reason": "stale_attempt"}
            )
            is None
        )
        assert (
            service.metrics.registry.get_sample_value(
                "janus_rejected_messages_total", {"source": "results", "reason": "unknown_job"}
            )
            is None
        )


async def test_throttled_with_retry_after_pauses_the_dependency(database: str, vhost: str) -> None:
    config = make_config(database, vhost, {"api": {"lease_timeout": "10s", "retry": {"base_delay": "0.05s"}}})
    log = RecordLog()

    async def api(job: ReadyJob) -> None:
        if job.try_number == 1:
            raise Throttled(retry_after=1.0)

    async with running_janus(config), Worker(vhost, {"api": api}, on_record=log.append):
        await asyncio.to_thread(submit, "polite", "api", amqp_url=vhost)
        await log.wait_for(lambda _: "polite" in log.succeeded(), timeout=20)
    first, second = sorted(log.records, key=lambda r: r.attempt)
    assert first.error == "throttled, retry after 1s"
    assert first.finished_at is not None
    assert second.admitted_at - first.finished_at >= 1.0


def plain_code_submits(url: str) -> list[str]:
    """What a script or a Django view would do: no asyncio in sight, several threads at once."""
    errors: list[str] = []
    with SyncProducer(url) as producer:

        def one(n: int) -> None:
            producer.submit(f"sync-{n}", "api", {"n": n}, scope=f"t{n % 2}")

        threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for bad in ("", "a\nb"):
            try:
                producer.submit(bad, "api")
            except ProtocolError as exc:
                errors.append(exc.reason)
        try:
            producer.submit("nan", "api", float("nan"))
        except ProtocolError as exc:
            errors.append(exc.reason)
    submit("one-shot", "api", amqp_url=url)
    return errors


async def test_sync_producer_from_plain_code(database: str, vhost: str) -> None:
    config = make_config(database, vhost, {"api": {"lease_timeout": "10s"}})
    async with running_janus(config):
        errors = await asyncio.to_thread(plain_code_submits, vhost)
        rows = await wait_for_states(database, lambda rows: len(rows) == 9, 20)
    assert errors == ["invalid_fields"] * 3, "refused before publishing, with the protocol's reason"
    assert sorted(rows) == sorted([f"sync-{n}" for n in range(8)] + ["one-shot"])
    assert rows["sync-3"]["scope"] == "t1"


def submit_unrouted(url: str) -> str:
    with SyncProducer(url) as producer:
        try:
            producer.submit("lost", "api")
        except BrokerError as exc:
            return f"{type(exc).__name__}: {exc}"
    return "no error"


async def test_sync_producer_raises_when_the_broker_routes_a_job_nowhere(vhost: str) -> None:
    """janus.intake exists but nothing is bound to it: the mandatory publish comes back."""
    connection = await aio_pika.connect(vhost)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(topology.INTAKE_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    said = await asyncio.to_thread(submit_unrouted, vhost)
    assert said.startswith("NotRouted: no queue took job 'lost' (routing key 'api')"), said
