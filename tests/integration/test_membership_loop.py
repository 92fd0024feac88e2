"""Member loops (janus/service/members.py) sharing six dependencies through a real PostgreSQL:
three settle balanced; one killed (its loop cancelled, no goodbye) has its dependencies taken
over within 5 s; a fourth joining takes its share by handover; a graceful leave hands over at
once. Throughout, no two loops act for one dependency at one instant (all loops run in this
process, so their intervals are on one monotonic clock)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

import asyncpg
import pytest

from janus.service.members import MemberLoop, MemberTimings
from janus.store.membership import Membership

pytestmark = pytest.mark.integration

DEPENDENCIES = tuple(f"dep-{i}" for i in range(6))
TIMINGS = MemberTimings(lease=3.0, poll_every=0.5)


class Recorder:
    """Every interval each loop acted for each dependency: [start, end) on the monotonic clock."""

    def __init__(self) -> None:
        self.intervals: dict[str, list[tuple[str, float, float | None]]] = defaultdict(list)
        self.changed = asyncio.Event()

    def lanes(self, name: str) -> _Lanes:
        return _Lanes(self, name)

    def start(self, name: str, dependency: str) -> None:
        self.intervals[dependency].append((name, time.monotonic(), None))
        self.changed.set()

    def end(self, name: str, dependency: str, at: float | None = None) -> None:
        spans = self.intervals[dependency]
        for index in range(len(spans) - 1, -1, -1):
            who, start, end = spans[index]
            if who == name and end is None:
                spans[index] = (who, start, time.monotonic() if at is None else at)
                break
        self.changed.set()

    def owners(self) -> dict[str, str]:
        return {d: spans[-1][0] for d, spans in self.intervals.items() if spans and spans[-1][2] is None}

    def check_never_two_at_once(self) -> None:
        for dependency, spans in self.intervals.items():
            ordered = sorted(spans, key=lambda s: s[1])
            for (who, _, end), (next_who, next_start, _) in itertools.pairwise(ordered):
                assert end is not None, f"{dependency}: {who} still acting when {next_who} started"
                assert end <= next_start, f"{dependency}: {who} until {end}, {next_who} from {next_start}"


class _Lanes:
    def __init__(self, recorder: Recorder, name: str) -> None:
        self._recorder = recorder
        self._name = name

    async def gained(self, dependency: str, epoch: int) -> None:
        self._recorder.start(self._name, dependency)

    async def handover(self, dependency: str) -> None:
        self._recorder.end(self._name, dependency)

    def lost(self, dependency: str) -> None:
        self._recorder.end(self._name, dependency)


@pytest.fixture
async def membership(database: str) -> AsyncIterator[Membership]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=12)
    yield Membership(pool, timeout=5.0)
    await pool.close()


async def until(recorder: Recorder, check: object, deadline: float) -> float:
    """Wait for `check()` to hold (re-checked on every change); the seconds it took."""
    assert callable(check)
    started = time.monotonic()
    while not check():
        remaining = deadline - (time.monotonic() - started)
        assert remaining > 0, "not within the deadline"
        recorder.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(recorder.changed.wait(), remaining)
    return time.monotonic() - started


def balanced(recorder: Recorder, names: set[str]) -> bool:
    owners = recorder.owners()
    if set(owners) != set(DEPENDENCIES) or set(owners.values()) != names:
        return False
    loads = [list(owners.values()).count(n) for n in names]
    return max(loads) - min(loads) <= 1


async def test_members_share_take_over_within_5s_and_hand_over_on_join(membership: Membership) -> None:
    recorder = Recorder()
    stops: dict[str, asyncio.Event] = {}
    tasks: dict[str, asyncio.Task[None]] = {}
    loops: dict[str, MemberLoop] = {}

    def start(name: str) -> None:
        loops[name] = MemberLoop(
            membership, DEPENDENCIES, recorder.lanes(name), member=uuid.uuid4(), timings=TIMINGS
        )
        stops[name] = asyncio.Event()
        tasks[name] = asyncio.create_task(loops[name].run(stops[name]))

    try:
        for name in ("a", "b", "c"):
            start(name)
        await until(recorder, lambda: balanced(recorder, {"a", "b", "c"}), 15.0)
        recorder.check_never_two_at_once()

        # kill -9 of "b": its loop stops mid-flight, no handover, no goodbye; it acts (at most)
        # until its local deadlines.
        victims = {d for d, o in recorder.owners().items() if o == "b"}
        tasks["b"].cancel()
        await asyncio.gather(tasks.pop("b"), return_exceptions=True)
        killed = time.monotonic()
        for dependency, owned in loops["b"].owned.items():
            recorder.end("b", dependency, at=owned.deadline)
        took = await until(
            recorder, lambda: all(recorder.owners().get(d) in {"a", "c"} for d in victims), 5.0
        )
        print(f"takeover of {len(victims)} dependencies after kill: {took:.2f}s")
        assert time.monotonic() - killed <= 5.0
        await until(recorder, lambda: balanced(recorder, {"a", "c"}), 5.0)
        recorder.check_never_two_at_once()

        # A fourth joins: dependencies move to it by handover, never two at once.
        before = recorder.owners()
        start("d")
        await until(recorder, lambda: balanced(recorder, {"a", "c", "d"}), 10.0)
        after = recorder.owners()
        moved = {d for d in DEPENDENCIES if before[d] != after[d]}
        assert {after[d] for d in moved} == {"d"}, "only the newcomer's share moves"
        assert len(moved) == len(DEPENDENCIES) // 3
        recorder.check_never_two_at_once()

        # A graceful leave hands over at once (no lease to wait out).
        stops["a"].set()
        await tasks.pop("a")
        took = await until(recorder, lambda: balanced(recorder, {"c", "d"}), 3.0)
        print(f"handover after a graceful leave: {took:.2f}s")
        recorder.check_never_two_at_once()
    finally:
        for name, task in tasks.items():
            stops[name].set()
            await asyncio.gather(task, return_exceptions=True)


def test_timings_that_could_lose_a_lease_on_one_slow_poll_are_refused() -> None:
    with pytest.raises(ValueError, match="poll_every"):
        MemberTimings(lease=1.0, poll_every=0.5)
