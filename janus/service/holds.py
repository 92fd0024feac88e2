"""Results queues held back from the next ticks: while a slice's bad results are being set aside,
and then, if the queue's bad results went past `bad_results_limit`, until the limit lets it go.

A flood of bad results so waits in the broker (durable, unacked) instead of taking the
leader's CPU from every other dependency (core/flood.py has the bound).
"""

from __future__ import annotations

import asyncio
from functools import partial

from janus.broker import topology
from janus.core.flood import BadInputLimit
from janus.core.policy import RateLimit
from janus.service.inbox import UNROUTABLE, Inbox, ResultSource
from janus.service.observe import Observer


class ResultHolds:
    def __init__(self, inbox: Inbox, limit: RateLimit | None, observer: Observer) -> None:
        self._inbox = inbox
        self._limit = limit  # per results queue, the bad results it may set aside per window
        self._observer = observer
        self._bad_results: dict[ResultSource, BadInputLimit] = {}
        self._serve_again: dict[ResultSource, float] = {}  # a held queue: when its limit lets it go
        self._timers: dict[ResultSource, asyncio.TimerHandle] = {}  # queues held by the limit alone
        self._stopping = False

    def hold(self, source: ResultSource, bad: int, settled: asyncio.Task[None]) -> None:
        """`bad` results of this queue's slice are being set aside by `settled`: its next slice
        gathers meanwhile (Inbox.hold), and is served once that is done and the limit allows."""
        self._inbox.hold(source)
        self._serve_again[source] = self._charge(source, bad)
        settled.add_done_callback(partial(self._release, source))

    def stop(self) -> None:
        """Serve every queue again, and hold none from now on: what was delivered is finished
        without the limit (the rest of a flood stays in the broker for the next leader, and
        stopping must not take a window per slice)."""
        self._stopping = True
        for source, timer in self._timers.items():
            timer.cancel()
            self._inbox.release(source)
        self._timers.clear()

    def _charge(self, source: ResultSource, count: int) -> float:
        """When this results queue may be served again, now that `count` more of its results were
        bad: a time of the event loop's monotonic clock (a wall clock set back would hold the queue
        for as long), now or earlier if within the limit."""
        if self._limit is None:
            return float("-inf")
        limit = self._bad_results.get(source)
        if limit is None:
            limit = self._bad_results[source] = BadInputLimit(self._limit)
        now = asyncio.get_running_loop().time()
        serve_again = limit.charge(count, now)
        if serve_again > now:
            queue = topology.UNROUTABLE_QUEUE if source is UNROUTABLE else topology.results_queue(source)
            self._observer.held(queue, serve_again - now, self._limit)
        return serve_again

    def _release(self, source: ResultSource, _: asyncio.Task[None]) -> None:
        """Its bad results are set aside: serve the queue again, once its limit allows."""
        loop = asyncio.get_running_loop()
        serve_again = self._serve_again.pop(source, float("-inf"))
        if serve_again > loop.time() and not self._stopping:
            self._timers[source] = loop.call_at(serve_again, self._release_after_limit, source)
        else:
            self._inbox.release(source)

    def _release_after_limit(self, source: ResultSource) -> None:
        del self._timers[source]
        self._inbox.release(source)
