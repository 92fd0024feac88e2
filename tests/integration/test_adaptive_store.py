"""Adaptive limits survive failover: written in the fenced tick, read back by a new leader's rebuild."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from janus.core.adaptive import AdaptiveState
from janus.core.policy import AdaptivePolicy, DependencyPolicy
from janus.core.rebuild import Snapshot
from janus.core.scheduler import Scheduler
from janus.errors import LeadershipLost
from janus.store.repository import Store

pytestmark = pytest.mark.integration


def limits(rate: float, reason: str) -> AdaptiveState:
    return AdaptiveState(
        dependency="api", rate=rate, concurrency=12.0, slow_start=False, reason=reason, changed_at=90.0
    )


async def test_a_new_leader_starts_from_the_last_adaptive_limits(database: str) -> None:
    store = await Store.connect(database)
    try:
        first, second = uuid.uuid4(), uuid.uuid4()
        epoch = await store.try_acquire(first, 0.5)
        assert epoch is not None
        async with store.leader_session(first, epoch) as session:
            await session.tick(1.0, [], [], [], adaptive=[limits(50.0, "raised after a clean round")])
            await session.tick(2.0, [], [], [], adaptive=[limits(38.0, "lowered after 3 throttled results")])
            await asyncio.sleep(0.6)  # the lease runs out unrenewed: a new leader takes over
            assert await store.try_acquire(second, 5.0) == 2
            with pytest.raises(LeadershipLost):  # fenced like every write of the tick
                await session.tick(3.0, [], [], [], adaptive=[limits(500.0, "raised after a clean round")])
        snapshot = await store.snapshot(admissions_since=0.0, budget_since=0.0)
    finally:
        await store.close()
    assert list(snapshot.adaptive) == [limits(38.0, "lowered after 3 throttled results")]
    dependency = DependencyPolicy(
        name="api", lease_timeout=60.0, adaptive=AdaptivePolicy(max_rate=1000.0, max_concurrency=100)
    )
    core = Scheduler.rebuilt([dependency], snapshot, 100.0, random.Random(1))
    view = core.adaptive_views()["api"]
    assert (view.rate, view.concurrency) == (38.0, 12)  # not max_rate, not a slow start from 10/s
    # A policy applied without the adaptive table rebuilds a core without it.
    plain = Scheduler.rebuilt(
        [DependencyPolicy(name="api", lease_timeout=60.0)], snapshot, 100.0, random.Random(1)
    )
    assert plain.adaptive_views() == {}
    assert Snapshot().adaptive == ()
