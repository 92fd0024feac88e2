"""How many consumers each ready queue has, as the broker counts them, polled by the leader.

The leader asks for every dependency on its own budget, off the tick path: at most once per
`every`, and never more than 1/SHARE of its time however many dependencies there are.
The core pauses admissions to a dependency with none (core/workers.py: `no_worker`).
A queue that does not exist has no consumer either (broker/ready_consumers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from janus.broker import topology
from janus.broker.connection import Connection
from janus.broker.ready_consumers import ConsumerCounter

log = logging.getLogger("janus.workers")

POLL_EVERY = 1.0  # seconds
SHARE = 50  # the polls wait this many times their own duration: at most 1/50 of the leader's time

# Told what changed: {dependency: consumers} of the last poll.
OnCounts = Callable[[dict[str, int]], None]


class WorkerWatch:
    def __init__(
        self, connection: Connection, dependencies: Iterable[str], every: float = POLL_EVERY
    ) -> None:
        self._counter = ConsumerCounter(connection)
        self._dependencies = list(dependencies)
        self._every = every
        self.counts: dict[str, int] = {}

    def watch(self, dependencies: Iterable[str]) -> None:
        """Dependencies added by a new version of the policy: counted from the next poll on."""
        self._dependencies += [name for name in dependencies if name not in self._dependencies]

    async def poll(self) -> dict[str, int]:
        """Every dependency's consumer count now (BrokerError if the broker fails)."""
        counts: dict[str, int] = {}
        for dependency in self._dependencies:
            counts[dependency] = await self._counter.count(topology.ready_queue(dependency))
        self._log_changes(counts)
        self.counts = counts
        return counts

    async def run(self, on_counts: OnCounts, until: asyncio.Event) -> None:
        """Poll until `until` is set (a supervised task of the term); `on_counts` after every
        poll. Never cancelled mid-poll at a clean stop: a cancelled declare closes its channel."""
        while not until.is_set():
            started = time.monotonic()
            on_counts(await self.poll())
            took = time.monotonic() - started
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), max(self._every, SHARE * took))

    def _log_changes(self, counts: dict[str, int]) -> None:
        for dependency, consumers in counts.items():
            before = self.counts.get(dependency)
            queue = topology.ready_queue(dependency)
            if consumers == 0 and before != 0:
                # Workers that went away are worth a warning; none yet at the start, only a note.
                level = logging.INFO if before is None else logging.WARNING
                log.log(
                    level,
                    "no worker is consuming %s: admissions to %s wait for one",
                    queue,
                    dependency,
                    extra={"dependency": dependency},
                )
            elif consumers and before == 0:
                log.info(
                    "a worker consumes %s (%d consumers): admissions to %s resume",
                    queue,
                    consumers,
                    dependency,
                    extra={"dependency": dependency},
                )

    async def close(self) -> None:
        await self._counter.close()
