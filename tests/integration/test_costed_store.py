"""Costed jobs across a failover (issue 23): the estimate and the settled actual cost are stored
(0 for an admission returned unused), and a new leader's unit windows are rebuilt from them,
against a real PostgreSQL."""

from __future__ import annotations

import json
import random
import uuid

import pytest

from janus.core.policy import DependencyPolicy, RateCounting, RateLimit
from janus.core.rebuild import history_since
from janus.core.scheduler import Scheduler
from janus.service.tick import run_tick
from janus.store.repository import Store
from janus.store.session import Settlement
from tests.unit.test_costed_edges import OPTIONS, costed
from tests.unit.test_tick import batch, delivery

pytestmark = pytest.mark.integration

POLICY = DependencyPolicy(
    name="llm",
    unit_limits=(RateLimit(count=100, window=10.0, counts=RateCounting.ADMISSIONS, units=True),),
    admission_ttl=1.0,
    lease_timeout=60.0,
)


async def test_a_new_leader_charges_the_settled_costs_and_the_open_estimates(database: str) -> None:
    core = Scheduler([POLICY], random.Random(0))
    for job_id, cost in (("over", 50.0), ("open", 30.0)):
        core.submit(job_id=job_id, dependency="llm", scope="t", payload=None, now=100.0, cost=cost)
    decision = core.admit(100.0)
    assert [a.job_id for a in decision.admissions] == ["over", "open"]
    changes = core.drain_changes()
    store = await Store.connect(database)
    try:
        holder = uuid.uuid4()
        epoch = await store.try_acquire(holder, 5.0)
        assert epoch is not None
        async with store.leader_session(holder, epoch) as session:
            stored = (
                await session.write_tick(100.0, [(job, None) for job in changes.new], [], decision.admissions)
            ).inserted
            assert stored == {"over", "open"}
            # "over" was estimated at 50 and cost 10: 40 units come back.
            held = core.job("over")
            assert held is not None
            assert held.admitted_at is not None
            core.on_result(
                job_id="over", attempt=1, success=True, error=None, retry_after=None, now=101.0, cost=10.0
            )
            settled = Settlement(
                job_id="over", attempt=1, dependency="llm", admitted_at=held.admitted_at, cost=10.0
            )
            await session.write_tick(101.0, [], core.drain_changes().updated, [], settled=[settled])
        since, budget_since = history_since([POLICY], 102.0)
        snapshot = await store.snapshot(admissions_since=since, budget_since=budget_since)
        async with store._pool.acquire() as connection:  # what the tables say, beside the snapshot
            rows = await connection.fetch("SELECT job_id, cost, actual_cost FROM janus.jobs ORDER BY job_id")
    finally:
        await store.close()
    assert [tuple(row) for row in rows] == [("open", 30.0, None), ("over", 50.0, 10.0)]
    assert sorted(snapshot.unit_admissions["llm"]) == [("open", 1, 100.0, 30.0), ("over", 1, 100.0, 10.0)]
    rebuilt = Scheduler.rebuilt([POLICY], snapshot, 102.0, random.Random(0))
    reloaded = rebuilt.job("open")
    assert reloaded is not None
    assert reloaded.cost == 30.0
    # 10 (settled) + 30 (open estimate) held: 60 fit, 61 do not.
    rebuilt.submit(job_id="fits", dependency="llm", scope="t", payload=None, now=102.0, cost=60.0)
    rebuilt.submit(job_id="waits", dependency="llm", scope="t", payload=None, now=102.0, cost=1.0)
    assert [a.job_id for a in rebuilt.admit(102.0).admissions] == ["fits"]
    # The open job's actual cost, reported to the new leader, is settled there too.
    rebuilt.on_result(
        job_id="open", attempt=1, success=True, error=None, retry_after=None, now=103.0, cost=0.0
    )
    assert [a.job_id for a in rebuilt.admit(103.0).admissions] == ["waits"]


async def test_an_admission_returned_unused_is_written_at_0_units_and_a_new_leader_charges_nothing_for_it(
    database: str,
) -> None:
    core = Scheduler([POLICY], random.Random(0))
    store = await Store.connect(database)
    try:
        holder = uuid.uuid4()
        epoch = await store.try_acquire(holder, 5.0)
        assert epoch is not None
        async with store.leader_session(holder, epoch) as session:
            ticked = await run_tick(
                batch(intake=[costed("back", 60.0), costed("open", 30.0)]),
                core,
                session,
                lambda: 100.0,
                OPTIONS,
            )
            assert [a.job_id for a in ticked.admissions] == ["back", "open"]
            # "back" expired in its queue (dead-lettered to Janus): it never started, it cost nothing.
            returned = delivery(json.dumps({"job_id": "back", "attempt": 1}).encode(), routing_key="llm")
            ticked = await run_tick(batch(returned=[returned]), core, session, lambda: 100.5, OPTIONS)
            assert ticked.events == {("returned", "released"): 1}
            # Its 60 units came back at once: admitted again, as attempt 2.
            assert [(a.job_id, a.attempt) for a in ticked.admissions] == [("back", 2)]
        since, budget_since = history_since([POLICY], 101.0)
        snapshot = await store.snapshot(admissions_since=since, budget_since=budget_since)
        async with store._pool.acquire() as connection:  # what the tables say, beside the snapshot
            rows = await connection.fetch("SELECT job_id, cost, actual_cost FROM janus.jobs ORDER BY job_id")
    finally:
        await store.close()
    assert [tuple(row) for row in rows] == [("back", 60.0, None), ("open", 30.0, None)]  # nothing reported
    assert sorted(snapshot.unit_admissions["llm"]) == [
        ("back", 1, 100.0, 0.0),
        ("back", 2, 100.5, 60.0),
        ("open", 1, 100.0, 30.0),
    ]
    rebuilt = Scheduler.rebuilt([POLICY], snapshot, 101.0, random.Random(0))
    # 60 + 30 held (the returned admission's estimate no longer): 10 fit, 11 do not.
    rebuilt.submit(job_id="fits", dependency="llm", scope="t", payload=None, now=101.0, cost=10.0)
    rebuilt.submit(job_id="waits", dependency="llm", scope="t", payload=None, now=101.0, cost=1.0)
    assert [a.job_id for a in rebuilt.admit(101.0).admissions] == ["fits"]
