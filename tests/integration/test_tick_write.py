"""A tick's write time comes from the session that decides whether a statement is sent at all:
`janus_tick_write_seconds` observes every tick that wrote, and no tick that wrote nothing.

What the database was sent is watched independently, through asyncpg's query logger on the
session's own connection.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import pytest

from janus.broker.consumer import Delivery
from janus.core.adaptive import AdaptiveState, Signal
from janus.core.circuit import CircuitSnapshot, CircuitState
from janus.core.gates import GateState
from janus.core.jobs import Admission, Job, JobState
from janus.core.policy import DependencyPolicy
from janus.core.scheduler import Scheduler
from janus.protocol import encode_intake
from janus.service.inbox import Batch
from janus.service.tick import TickOptions, run_tick
from janus.store.repository import Store
from janus.store.rows import FailedAttempt
from janus.store.session import LeaderSession, Settlement

pytestmark = pytest.mark.integration

NOW = 100.0


@dataclass(kw_only=True)
class Watched:
    """A leader session on a connection whose statements are recorded."""

    session: LeaderSession
    sent: list[str] = field(default_factory=list)


@pytest.fixture
async def watched(database: str) -> AsyncIterator[Watched]:
    store = await Store.connect(database)
    connection = await asyncpg.connect(database)
    try:
        holder = uuid.uuid4()
        epoch = await store.try_acquire(holder, 30.0)
        assert epoch is not None
        watched = Watched(session=LeaderSession(connection, holder, epoch))
        connection.add_query_logger(lambda logged: watched.sent.append(logged.query))
        yield watched
    finally:
        await connection.close()
        await store.close()


def waiting(job_id: str) -> Job:
    return Job(job_id=job_id, dependency="api", scope="s", payload=None, seq=1, eligible_at=1.0)


def admitted(job_id: str) -> Job:
    return waiting(job_id)._replace(
        state=JobState.ADMITTED, attempt=1, admitted_at=NOW, expires_at=NOW + 5, lease_deadline=NOW + 60
    )


ADAPTIVE = AdaptiveState(
    dependency="api",
    rate=50.0,
    concurrency=None,
    slow_start=False,
    reason="raised after a clean round",
    changed_at=NOW,
    signal=Signal.CLEAN,
    concurrency_slow_start=False,
    latency_floor=None,
)
OPEN = GateState(
    dependency="api",
    circuit=CircuitSnapshot(state=CircuitState.OPEN, since=NOW, open_until=NOW + 30, open_for=30.0),
    pause_until=None,
)

# Each row: what one tick hands the session, with "held" already stored and admitted.
WRITES: dict[str, Callable[[], dict[str, Any]]] = {
    "a new job": lambda: {"new": [(waiting("fresh"), None)]},
    "a new job admitted at once": lambda: {
        "new": [(admitted("fresh"), None)],
        "admissions": [Admission.of(admitted("fresh"))],
    },
    "a changed job": lambda: {
        "updated": [admitted("held")._replace(state=JobState.SUCCEEDED, finished_at=NOW)]
    },
    "only a failed attempt": lambda: {
        "failed": [FailedAttempt(job_id="held", attempt=1, failed_at=NOW, error="boom")]
    },
    "only a gate": lambda: {"gates": [OPEN]},
    "only an adaptive limit": lambda: {"adaptive": [ADAPTIVE]},
    "only a settled cost": lambda: {
        "settled": [Settlement(job_id="held", attempt=1, dependency="api", admitted_at=NOW, cost=2.0)]
    },
}


async def store_held(session: LeaderSession) -> None:
    await session.write_tick(NOW, [(admitted("held"), None)], [], [Admission.of(admitted("held"))])


@pytest.mark.parametrize("kind", list(WRITES))
async def test_a_tick_that_writes_reports_its_write_time(watched: Watched, kind: str) -> None:
    await store_held(watched.session)
    watched.sent.clear()
    parts = {"new": [], "updated": [], "admissions": [], **WRITES[kind]()}
    written = await watched.session.write_tick(NOW + 1, **parts)
    assert watched.sent, f"{kind}: a statement was sent"
    assert written.seconds is not None
    assert written.seconds > 0.0


async def test_a_tick_with_nothing_to_write_sends_nothing_and_reports_no_write_time(watched: Watched) -> None:
    await store_held(watched.session)
    watched.sent.clear()
    # The outbox travels with the changed jobs that finished: alone, it is nothing to write.
    written = await watched.session.write_tick(NOW + 1, [], [], [])
    assert (watched.sent, written.seconds, written.inserted) == ([], None, set())


def intake_delivery(job_id: str) -> Delivery:
    body = encode_intake(job_id=job_id, dependency="api", scope="s", payload=None)
    header = SimpleNamespace(properties=SimpleNamespace(content_type="application/json"))
    return cast(Any, SimpleNamespace(body=body, header=header, routing_key="api", channel=None))


def empty_batch(intake: list[Delivery] | None = None) -> Batch:
    return Batch(intake=intake or [], results={}, returned=[], unpublished=[])


async def test_run_tick_takes_its_write_time_from_what_the_session_sent(watched: Watched) -> None:
    scheduler = Scheduler([DependencyPolicy(name="api", lease_timeout=60.0)], random.Random(1))
    options = TickOptions(max_payload_bytes=1024)
    clock = iter([NOW, NOW + 1, NOW + 2])

    idle = await run_tick(empty_batch(), scheduler, watched.session, lambda: next(clock), options)
    assert (watched.sent, idle.write_seconds) == ([], None), "an idle tick writes nothing"

    busy = await run_tick(
        empty_batch([intake_delivery("a")]), scheduler, watched.session, lambda: next(clock), options
    )
    assert watched.sent, "a tick with a new job sends its statement"
    assert busy.accepted == 1
    assert busy.write_seconds is not None
    assert busy.write_seconds > 0.0
