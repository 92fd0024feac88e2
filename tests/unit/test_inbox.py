"""The inbox hands results out per source queue, in slices, in order, the queues taking turns,
and stays ready until it is empty."""

from __future__ import annotations

from typing import Any, cast

from janus.broker.consumer import Delivery
from janus.service.inbox import UNROUTABLE, Inbox


def deliveries(*tags: object) -> list[Delivery]:
    return [cast(Any, tag) for tag in tags]  # the inbox never looks inside a delivery


async def test_results_are_taken_in_slices_in_order() -> None:
    inbox = Inbox()
    api = inbox.on_result("api")
    for delivery in deliveries(1, 2, 3, 4, 5):
        await api(delivery)
    await inbox.on_intake(cast(Any, "job"))
    first = inbox.take(per_queue=2)
    assert (first.results, first.intake) == ({"api": deliveries(1, 2)}, ["job"])
    assert inbox.ready.is_set(), "more results wait: the loop must tick again at once"
    assert inbox.take(per_queue=2).results == {"api": deliveries(3, 4)}
    last = inbox.take(per_queue=2)
    assert (last.results, last.intake) == ({"api": deliveries(5)}, [])
    assert not inbox.ready.is_set()
    assert len(inbox) == 0


async def test_without_a_cap_everything_is_taken() -> None:
    inbox = Inbox()
    api = inbox.on_result("api")
    for delivery in deliveries(1, 2, 3):
        await api(delivery)
    assert inbox.take().results == {"api": deliveries(1, 2, 3)}
    assert not inbox.ready.is_set()


async def test_a_flooded_queue_cannot_crowd_out_another() -> None:
    inbox = Inbox()
    flooded, healthy, unroutable = inbox.on_result("x"), inbox.on_result("y"), inbox.on_result(UNROUTABLE)
    for index in range(1000):
        await flooded(cast(Any, f"x{index}"))
    await healthy(cast(Any, "y0"))
    await unroutable(cast(Any, "u0"))
    batch = inbox.take(per_queue=10, total=100)
    # Every queue with results gets its slice in the first batch, the flooded one no more than 10.
    assert batch.results == {"x": deliveries(*(f"x{i}" for i in range(10))), "y": ["y0"], None: ["u0"]}
    assert inbox.results_waiting() == 990


async def test_the_total_cap_is_shared_in_turns() -> None:
    inbox = Inbox()
    queues = {name: inbox.on_result(name) for name in ("a", "b", "c")}
    for name, append in queues.items():
        for index in range(10):
            await append(cast(Any, f"{name}{index}"))
    served_first = []
    for _ in range(3):
        batch = inbox.take(per_queue=5, total=5)  # room for one queue's slice per batch
        (source,) = batch.results
        served_first.append(source)
    assert sorted(served_first) == ["a", "b", "c"], "each queue gets a turn"


async def test_a_held_queue_gathers_until_released() -> None:
    inbox = Inbox()
    flooded, healthy = inbox.on_result("x"), inbox.on_result("y")
    await flooded(cast(Any, "x0"))
    assert inbox.take(per_queue=10).results == {"x": ["x0"]}
    inbox.hold("x")  # its slice is being set aside
    for index in range(1, 4):
        await flooded(cast(Any, f"x{index}"))
    assert not inbox.ready.is_set(), "a held queue's deliveries do not wake the loop"
    await healthy(cast(Any, "y0"))
    assert inbox.ready.is_set()
    assert inbox.take(per_queue=10).results == {"y": ["y0"]}, "other queues go on"
    assert not inbox.ready.is_set()
    assert (len(inbox), inbox.servable()) == (3, 0), "a held queue's deliveries cannot be served"
    await inbox.on_intake(cast(Any, "job"))
    assert inbox.servable() == 1
    inbox.release("x")
    assert (inbox.servable(), inbox.servable(per_queue=2)) == (4, 3), "as a take could serve them"
    inbox.release("x")
    assert inbox.ready.is_set()
    assert inbox.take(per_queue=10).results == {"x": deliveries("x1", "x2", "x3")}, "one slice"


async def test_a_batch_carries_when_its_first_message_arrived() -> None:
    now = [10.0]
    inbox = Inbox(clock=lambda: now[0])
    api = inbox.on_result("api")
    assert inbox.take().first_arrival is None
    await inbox.on_intake(cast(Any, "job"))
    now[0] = 11.0
    await api(cast(Any, "result"))  # not the first: the inbox was not empty
    assert inbox.take().first_arrival == 10.0
    assert inbox.first_arrival is None, "emptied: the next arrival starts the clock again"
    for delivery in deliveries(1, 2, 3):
        await api(delivery)
    assert inbox.take(per_queue=2).first_arrival == 11.0
    now[0] = 12.0
    # One result left over from the slice: it may have waited since then.
    assert inbox.take(per_queue=2).first_arrival == 11.0
    assert inbox.first_arrival is None
