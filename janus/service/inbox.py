"""Deliveries waiting for the next admission tick.

Consumers only append here; the admission loop takes a batch at once, so one
transaction and one multiple-ack per channel cover it. The broker's prefetch bounds
how much can pile up.

Results are kept per source queue (one per dependency, and janus.q.unroutable), and
each tick takes at most a slice of each, the queues served in turn: a worker flooding
its own dependency's queue cannot crowd the results of another out of a tick. A slice is
always the oldest deliveries of its queue, and each queue has a channel of its own, so a
multiple-ack of a slice's last delivery covers that slice and nothing not yet taken.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from janus.broker.consumer import Delivery
from janus.core.jobs import Admission, Job
from janus.core.steering import Steering

# The source of results that came through janus.q.unroutable: no dependency vouches for them.
UNROUTABLE = None
ResultSource = str | None  # a dependency (its results queue), or UNROUTABLE


@dataclass(kw_only=True)
class Control:
    """An operator's change for the admission loop to apply to its core before the next tick
    (service/steer.py); `done` is resolved once it has."""

    rebuild: bool = False  # a new version of the policy: the core rebuilt from PostgreSQL with it
    steering: list[Steering] = field(default_factory=list)
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass(kw_only=True)
class Batch:
    intake: list[Delivery]
    results: dict[ResultSource, list[Delivery]]  # per source queue, oldest first
    returned: list[Delivery]
    unpublished: list[Admission]
    revived: list[Job] = field(default_factory=list)  # dead jobs made waiting again (janus jobs retry)
    controls: list[Control] = field(default_factory=list)  # applied before the tick
    first_arrival: float | None = None  # when its oldest message reached the inbox (perf_counter)

    def __len__(self) -> int:
        return (
            len(self.intake)
            + sum(len(deliveries) for deliveries in self.results.values())
            + len(self.returned)
            + len(self.unpublished)
        )


@dataclass
class Inbox:
    intake: list[Delivery] = field(default_factory=list)
    results: dict[ResultSource, list[Delivery]] = field(default_factory=dict)
    returned: list[Delivery] = field(default_factory=list)
    unpublished: list[Admission] = field(default_factory=list)
    revived: list[Job] = field(default_factory=list)
    controls: list[Control] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _turn: int = 0  # which results queue is served first next (round robin)
    # Results queues whose last slice is still being set aside: not served until it is.
    _held: set[ResultSource] = field(default_factory=set)
    # When the inbox went from empty to not: how long a tick's first delivery waited (a metric).
    first_arrival: float | None = None
    clock: Callable[[], float] = time.perf_counter

    async def on_intake(self, message: Delivery) -> None:
        if self.first_arrival is None:
            self.first_arrival = self.clock()
        self.intake.append(message)
        self.ready.set()

    def on_result(self, source: ResultSource) -> Callable[[Delivery], Coroutine[Any, Any, None]]:
        """The consumer callback of one results queue."""
        waiting = self.results.setdefault(source, [])
        ready, held = self.ready, self._held

        async def append(message: Delivery) -> None:
            if self.first_arrival is None:
                self.first_arrival = self.clock()
            waiting.append(message)
            if source not in held:
                ready.set()

        return append

    def hold(self, source: ResultSource) -> None:
        """Serve this queue no more until `release`: while a slice of bad results is being set
        aside, the queue's next deliveries gather into one slice, instead of a tick each few of
        them (a flood then costs per slice, not per trickle), and other queues go on."""
        self._held.add(source)

    def release(self, source: ResultSource) -> None:
        self._held.discard(source)
        if self.results.get(source):
            self.ready.set()

    async def on_returned(self, message: Delivery) -> None:
        if self.first_arrival is None:
            self.first_arrival = self.clock()
        self.returned.append(message)
        self.ready.set()

    def add_unpublished(self, admissions: list[Admission]) -> None:
        if self.first_arrival is None:
            self.first_arrival = self.clock()
        self.unpublished.extend(admissions)
        self.ready.set()

    def add_revived(self, jobs: list[Job]) -> None:
        self.revived.extend(jobs)
        self.ready.set()

    def add_control(self, control: Control) -> None:
        self.controls.append(control)
        self.ready.set()

    def results_waiting(self) -> int:
        return sum(len(deliveries) for deliveries in self.results.values())

    def servable(self, per_queue: int | None = None) -> int:
        """What the next `take(per_queue)` could hand out (before its total cap): held queues do not
        count, and a results queue counts no more than `per_queue`."""
        held, cap = self._held, per_queue if per_queue is not None else len(self)
        results = sum(
            min(len(waiting), cap) for source, waiting in self.results.items() if source not in held
        )
        return len(self.intake) + results + len(self.returned) + len(self.unpublished)

    def __len__(self) -> int:
        return len(self.intake) + self.results_waiting() + len(self.returned) + len(self.unpublished)

    def take(self, per_queue: int | None = None, total: int | None = None) -> Batch:
        """Everything delivered so far, except results: at most `per_queue` of each results queue
        (its oldest) and `total` in all, the queues taking turns to be served first. The rest stay,
        in order, for the next batch, and `ready` stays set."""
        sources = [source for source, waiting in self.results.items() if waiting and source not in self._held]
        if sources:
            start = self._turn % len(sources)
            self._turn += 1
            sources = sources[start:] + sources[:start]
        budget = total
        results: dict[ResultSource, list[Delivery]] = {}
        for source in sources:
            waiting = self.results[source]
            count = len(waiting)
            if per_queue is not None:
                count = min(count, per_queue)
            if budget is not None:
                count = min(count, budget)
                budget -= count
            if count == 0:
                break
            results[source] = waiting[:count]
            del waiting[:count]  # in place: the consumer callback appends to this very list
        batch = Batch(
            intake=self.intake,
            results=results,
            returned=self.returned,
            unpublished=self.unpublished,
            revived=self.revived,
            controls=self.controls,
            first_arrival=self.first_arrival,
        )
        self.intake, self.returned, self.unpublished, self.revived = [], [], [], []
        self.controls = []
        if not len(self):
            # Results left over (beyond a slice) keep the old time: they may be that old.
            self.first_arrival = None
        if not any(waiting and source not in self._held for source, waiting in self.results.items()):
            self.ready.clear()
        return batch
