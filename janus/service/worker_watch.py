"""How many consumers each ready queue has, as the broker counts them, polled by the leader.

A passive declare of a queue answers its consumer count (and needs no permission). The
leader asks for every dependency on its own budget, off the tick path: at most once per
`every`, and never more than 1/SHARE of its time however many dependencies there are.
The core pauses admissions to a dependency with none (core/workers.py: `no_worker`).
A queue that does not exist has no consumer either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import ChannelNotFoundEntity

from janus.broker import BROKER_ERRORS, topology
from janus.errors import BrokerError

log = logging.getLogger("janus.workers")

POLL_EVERY = 1.0  # seconds
SHARE = 50  # the polls wait this many times their own duration: at most 1/50 of the leader's time

# Told what changed: {dependency: consumers} of the last poll.
OnCounts = Callable[[dict[str, int]], None]


class WorkerWatch:
    def __init__(
        self, connection: AbstractConnection, dependencies: Iterable[str], every: float = POLL_EVERY
    ) -> None:
        self._connection = connection
        self._dependencies = list(dependencies)
        self._every = every
        self._channel: AbstractChannel | None = None
        self.counts: dict[str, int] = {}

    async def poll(self) -> dict[str, int]:
        """Every dependency's consumer count now (BrokerError if the broker fails)."""
        counts: dict[str, int] = {}
        try:
            for dependency in self._dependencies:
                counts[dependency] = await self._consumers(topology.ready_queue(dependency))
        except BROKER_ERRORS as exc:
            raise BrokerError(f"counting the consumers of the ready queues failed: {exc!r}") from exc
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

    async def _consumers(self, queue: str) -> int:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel()
        raw = await self._channel.get_underlay_channel()
        try:
            declared = await raw.queue_declare(queue, passive=True)
        except ChannelNotFoundEntity:
            self._channel = None  # the failed declare closed it
            return 0
        return declared.consumer_count or 0

    def _log_changes(self, counts: dict[str, int]) -> None:
        for dependency, consumers in counts.items():
            before = self.counts.get(dependency)
            queue = topology.ready_queue(dependency)
            if consumers == 0 and before != 0:
                # Workers that went away are worth a warning; none yet at the start, only a note.
                level = logging.INFO if before is None else logging.WARNING
                log.log(level, "no worker is consuming %s: admissions to %s wait for one", queue, dependency)
            elif consumers and before == 0:
                log.info(
                    "a worker consumes %s (%d consumers): admissions to %s resume",
                    queue,
                    consumers,
                    dependency,
                )

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            # The connection may be gone already: nothing to save.
            with contextlib.suppress(*BROKER_ERRORS):
                await self._channel.close()
