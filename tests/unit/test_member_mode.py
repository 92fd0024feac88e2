"""Member mode's lanes and term (service/member_mode.py), without services: what the member loop's
calls do to the term in force, and when a member term may act."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from janus.errors import LeadershipLost
from janus.service.member_mode import QUICK_POLL, QUICK_WAITS, MemberTerm, PollPace, TermLanes, alongside
from janus.service.members import Owned


def term(epochs: dict[str, int], owned: dict[str, Owned]) -> MemberTerm:
    return MemberTerm(holder=uuid.uuid4(), epoch=0, trusted_until=0.0, epochs=epochs, owned=lambda: owned)


def test_a_member_term_acts_only_while_every_dependency_is_ours_in_its_epoch() -> None:
    later = time.monotonic() + 60
    owned = {"a": Owned(epoch=3, deadline=later), "b": Owned(epoch=1, deadline=later)}
    assert term({"a": 3, "b": 1}, owned).may_act()
    assert not term({"a": 2, "b": 1}, owned).may_act(), "another epoch of a"
    assert not term({"a": 3, "c": 1}, owned).may_act(), "c is not ours"
    owned["b"] = Owned(epoch=1, deadline=time.monotonic() - 0.01)
    assert not term({"a": 3, "b": 1}, owned).may_act(), "b's local deadline passed"


async def test_a_gain_drains_the_term_in_force_and_asks_for_a_new_one() -> None:
    lanes = TermLanes()
    await lanes.gained("a", 1)
    assert lanes.owned == {"a": 1}
    assert lanes.changed.is_set()
    assert lanes.drain.is_set()


async def test_a_handover_waits_for_the_term_that_admits_for_it_to_end() -> None:
    lanes = TermLanes(owned={"a": 1, "b": 1})
    ended = asyncio.Event()

    async def serve() -> None:
        await lanes.drain.wait()  # as a term: admits until drained
        ended.set()

    lanes.term = asyncio.create_task(serve())
    lanes.term_epochs = {"a": 1, "b": 1}
    handing = asyncio.create_task(lanes.handover("a"))
    await asyncio.sleep(0.01)
    assert lanes.drain.is_set()
    assert not handing.done(), "returns only once the term has ended"
    await ended.wait()
    await lanes.term
    lanes.ended.set()  # what the term runner does when the task is over
    await asyncio.wait_for(handing, 1.0)
    assert lanes.owned == {"b": 1}
    # No term admits for it: a handover returns at once.
    lanes.term = None
    await asyncio.wait_for(lanes.handover("b"), 0.1)
    assert lanes.owned == {}


async def test_a_lost_lease_cancels_the_term_at_once() -> None:
    lanes = TermLanes(owned={"a": 1, "b": 2})
    lanes.term = asyncio.create_task(asyncio.sleep(60))
    lanes.term_epochs = {"a": 1, "b": 2}
    lanes.lost("b")
    await asyncio.sleep(0)
    assert lanes.term.cancelled()
    assert lanes.owned == {"a": 1}
    assert lanes.changed.is_set()
    assert not lanes.drain.is_set(), "not drained: cancelled, nothing more committed"


def test_a_member_polls_quickly_early_in_a_wait_for_a_handover_to_it() -> None:
    pace = PollPace(every=0.5)
    assert pace.after(False, now=10.0) == 0.5
    # Waiting for another member's handover: quick polls for QUICK_WAITS poll periods, then as usual.
    assert [pace.after(True, now=t) for t in (11.0, 11.5, 12.49)] == [QUICK_POLL] * 3
    assert pace.after(True, now=11.0 + QUICK_WAITS * 0.5) == 0.5
    assert pace.after(False, now=13.0) == 0.5
    assert pace.after(True, now=20.0) == QUICK_POLL, "the next wait starts quick again"


async def test_the_rebuild_and_the_broker_set_up_run_alongside_and_a_failure_stops_both() -> None:
    async def after(seconds: float, value: str) -> str:
        await asyncio.sleep(seconds)
        return value

    started = asyncio.get_running_loop().time()
    assert await alongside(after(0.2, "core"), after(0.2, "publisher")) == ("core", "publisher")
    assert asyncio.get_running_loop().time() - started < 0.35, "at the same time, not one after the other"

    other_ended = asyncio.Event()

    async def slow() -> str:
        try:
            await asyncio.sleep(10)
        finally:
            other_ended.set()
        return "never"

    async def failing() -> str:
        await asyncio.sleep(0.01)
        raise LeadershipLost("gone")

    with pytest.raises(LeadershipLost):  # as it is, not in an exception group
        await alongside(slow(), failing())
    assert other_ended.is_set(), "the other is over before the failure is raised"
