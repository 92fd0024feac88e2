"""Janus recovers by itself, in-process, when the broker or the database drops its connections;
a genuine bug still stops it.

Fast, in-process variants of the restart tests in tests/system/test_failover.py: here the
services stay up and only Janus's own connections are cut (`pg_terminate_backend`,
`rabbitmqctl close_connection`), which is what a restart does to a client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest

from janus.audit import audit_database
from janus.client import Producer, Worker
from janus.core.scheduler import Scheduler
from janus.service.app import Service
from janus.service.health import Role
from janus.service.options import ServiceOptions
from tests.integration.harness import (
    FAST_LEASE,
    RecordLog,
    close_connections_named,
    make_config,
    policies,
    running_janus,
    succeed,
)

DEPENDENCIES = {"api": {"rate_limits": ["40/1s"], "concurrency": 5, "lease_timeout": "3s"}}


async def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    """Janus's state has no event to wait on from outside: poll it, with a deadline."""
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


def ended(service: Service, cause: str) -> float:
    value = service.metrics.registry.get_sample_value("janus_terms_ended_total", {"cause": cause})
    return value or 0.0


async def cut_database_connections(database: str, service: Service) -> int:
    connection = await asyncpg.connect(database)
    try:
        return len(
            await connection.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                f"janus-{service.identity}",
            )
        )
    finally:
        await connection.close()


async def cut_broker_connection(service: Service) -> None:
    await close_connections_named(f"janus-{service.identity}")


async def test_janus_recovers_in_process_and_loses_nothing(database: str, vhost: str) -> None:
    """Cut its database connections mid-stream, then its broker connection: each time the term
    ends, a new one (a new epoch, rebuilt from PostgreSQL) starts by itself, and nothing is lost."""
    config = make_config(database, vhost, DEPENDENCIES)
    log = RecordLog()
    worker = Worker(vhost, {"api": succeed}, on_record=log.append)
    jobs = [(f"job-{i}", "api", None, f"t{i % 2}") for i in range(200)]
    try:
        async with running_janus(config) as service, await Producer.connect(vhost) as producer:
            await worker.start()  # once Janus has declared the topology
            submitting = asyncio.create_task(producer.submit_many(jobs, window=20))
            for lose, after in (("database", 30), ("broker", 90)):
                await log.wait_for(lambda records, n=after: len(records) >= n, timeout=30)  # mid-stream
                epoch = service.health.epoch
                assert epoch is not None
                if lose == "database":
                    assert await cut_database_connections(database, service) >= 1
                else:
                    await cut_broker_connection(service)
                await wait_until(lambda cause=lose: ended(service, cause) >= 1, timeout=15)
                # A new term, rebuilt from PostgreSQL, admitting again:
                await wait_until(
                    lambda old=epoch: (
                        service.health.role is Role.LEADING and (service.health.epoch or 0) > old
                    ),
                    timeout=15,
                )
            await submitting
            # Under load (7 on 2 cores) the whole run takes 30-47 s; alone, 12 s.
            await log.wait_for(lambda _: len(log.succeeded()) == len(jobs), timeout=60)
    finally:
        await worker.stop()
    report = await audit_database(log.records, policies(config), database, expected_jobs=[j[0] for j in jobs])
    assert report.ok, report.summary()


async def test_a_bug_is_not_recovered_from(
    database: str, vhost: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only lost services are recovered from: a programming error stops the service (its supervisor
    restarts the process) rather than looping on it."""

    def broken(self: Scheduler, now: float, limit: int | None = None) -> None:
        raise ZeroDivisionError("a bug")

    config = make_config(database, vhost, DEPENDENCIES)
    monkeypatch.setattr(Scheduler, "admit", broken)
    service = Service(config, ServiceOptions(timings=FAST_LEASE, serve_metrics=False))
    with pytest.raises(BaseExceptionGroup) as caught:
        await asyncio.wait_for(service.run(), timeout=30)
    assert caught.group_contains(ZeroDivisionError)
    assert ended(service, "bug") == 1
