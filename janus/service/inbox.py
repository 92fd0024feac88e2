"""Deliveries waiting for the next admission tick.

Consumers only append here; the admission loop takes everything at once, so one
transaction and one multiple-ack per channel cover a whole batch. The broker's
prefetch bounds how much can pile up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from janus.broker.consumer import Delivery
from janus.core.jobs import Admission, Job


@dataclass(kw_only=True)
class Batch:
    intake: list[Delivery]
    results: list[Delivery]
    returned: list[Delivery]
    unpublished: list[Admission]
    revived: list[Job] = field(default_factory=list)  # dead jobs made waiting again (janus jobs retry)

    def __len__(self) -> int:
        return len(self.intake) + len(self.results) + len(self.returned) + len(self.unpublished)


@dataclass
class Inbox:
    intake: list[Delivery] = field(default_factory=list)
    results: list[Delivery] = field(default_factory=list)
    returned: list[Delivery] = field(default_factory=list)
    unpublished: list[Admission] = field(default_factory=list)
    revived: list[Job] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_intake(self, message: Delivery) -> None:
        self.intake.append(message)
        self.ready.set()

    async def on_result(self, message: Delivery) -> None:
        self.results.append(message)
        self.ready.set()

    async def on_returned(self, message: Delivery) -> None:
        self.returned.append(message)
        self.ready.set()

    def add_unpublished(self, admissions: list[Admission]) -> None:
        self.unpublished.extend(admissions)
        self.ready.set()

    def add_revived(self, jobs: list[Job]) -> None:
        self.revived.extend(jobs)
        self.ready.set()

    def __len__(self) -> int:
        return len(self.intake) + len(self.results) + len(self.returned) + len(self.unpublished)

    def take(self, max_results: int | None = None) -> Batch:
        """Everything delivered so far; of the results, only the first `max_results` (the rest
        stay for the next batch, in order: a flood of results must not make one batch huge)."""
        results = self.results
        rest: list[Delivery] = []
        if max_results is not None and len(results) > max_results:
            results, rest = results[:max_results], results[max_results:]
        batch = Batch(
            intake=self.intake,
            results=results,
            returned=self.returned,
            unpublished=self.unpublished,
            revived=self.revived,
        )
        self.intake, self.results, self.returned, self.unpublished, self.revived = [], rest, [], [], []
        if not rest:
            self.ready.clear()
        return batch
