"""Adaptive limits survive failover: written in the fenced tick, read back by a new leader's rebuild."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from janus.core.adaptive import AdaptiveState, Signal
from janus.core.policy import AdaptivePolicy, DependencyPolicy
from janus.core.rebuild import Snapshot
from janus.core.scheduler import Scheduler
from janus.errors import LeadershipLost
from janus.store.repository import Store

pytestmark = pytest.mark.integration


def limits(rate: float, reason: str, signal: Signal = Signal.CLEAN) -> AdaptiveState:
    return AdaptiveState(
        dependency="api",
        rate=rate,
        concurrency=12.0,
        slow_start=False,
        reason=reason,
        changed_at=90.0,
        signal=signal,
        concurrency_slow_start=False,  # the knee was found: no slow start's steps past it
        latency_floor=0.25,
    )


LOWERED = limits(38.0, "lowered after 3 throttled results", Signal.THROTTLED)


async def test_a_new_leader_starts_from_the_last_adaptive_limits(database: str) -> None:
    store = await Store.connect(database)
    try:
        first, second = uuid.uuid4(), uuid.uuid4()
        epoch = await store.try_acquire(first, 0.5)
        assert epoch is not None
        async with store.leader_session(first, epoch) as session:
            await session.write_tick(1.0, [], [], [], adaptive=[limits(50.0, "raised after a clean round")])
            await session.write_tick(2.0, [], [], [], adaptive=[LOWERED])
            await asyncio.sleep(0.6)  # the lease runs out unrenewed: a new leader takes over
            assert await store.try_acquire(second, 5.0) == 2
            with pytest.raises(LeadershipLost):  # fenced like every write of the tick
                await session.write_tick(
                    3.0, [], [], [], adaptive=[limits(500.0, "raised after a clean round")]
                )
        snapshot = await store.snapshot(admissions_since=0.0, budget_since=0.0)
    finally:
        await store.close()
    assert list(snapshot.adaptive) == [LOWERED]  # every column, the signal and the floor too
    dependency = DependencyPolicy(
        name="api", lease_timeout=60.0, adaptive=AdaptivePolicy(max_rate=1000.0, max_concurrency=100)
    )
    core = Scheduler.rebuilt([dependency], snapshot, 100.0, random.Random(1))
    view = core.adaptive_views()["api"]
    assert (view.rate, view.concurrency) == (38.0, 12)  # not max_rate, not a slow start from 10/s
    # What moved them last is still said after failover, in `janus why` and in the metric's label.
    assert view.describe_rate(100.0) == "adaptive rate 38/1s, lowered 10 s ago after 3 throttled results"
    assert view.signal is Signal.THROTTLED
    # The concurrency goes on past its slow start, from its floor.
    [state] = [lane.adaptive.state() for lane in core._lanes.values() if lane.adaptive is not None]
    assert (state.concurrency_slow_start, state.latency_floor) == (False, 0.25)
    # A policy applied without the adaptive table rebuilds a core without it.
    plain = Scheduler.rebuilt(
        [DependencyPolicy(name="api", lease_timeout=60.0)], snapshot, 100.0, random.Random(1)
    )
    assert plain.adaptive_views() == {}
    assert Snapshot().adaptive == ()
