"""The inbox hands a flood of results out in slices, in order, and stays ready until it is empty."""

from __future__ import annotations

from typing import Any, cast

from janus.broker.consumer import Delivery
from janus.service.inbox import Inbox


def deliveries(*tags: int) -> list[Delivery]:
    return [cast(Any, tag) for tag in tags]  # the inbox never looks inside a delivery


async def test_results_are_taken_in_slices_in_order() -> None:
    inbox = Inbox()
    for delivery in deliveries(1, 2, 3, 4, 5):
        await inbox.on_result(delivery)
    await inbox.on_intake(cast(Any, "job"))
    first = inbox.take(max_results=2)
    assert (first.results, first.intake) == (deliveries(1, 2), ["job"])
    assert inbox.ready.is_set(), "more results wait: the loop must tick again at once"
    assert inbox.take(max_results=2).results == deliveries(3, 4)
    last = inbox.take(max_results=2)
    assert (last.results, last.intake) == (deliveries(5), [])
    assert not inbox.ready.is_set()
    assert len(inbox) == 0


async def test_without_a_cap_everything_is_taken() -> None:
    inbox = Inbox()
    for delivery in deliveries(1, 2, 3):
        await inbox.on_result(delivery)
    assert inbox.take().results == deliveries(1, 2, 3)
    assert not inbox.ready.is_set()
