"""How often the leader is asked for a /scopes snapshot: on a budget of its own, never per request.

Every /scopes answer is cut from the latest snapshot. A snapshot is refreshed when one is asked
for and it is older than `max_age`, but never sooner after the last than `cost / budget`
(the loop time the last one took, over the share of the loop inspection may use): 16 clients
looping on /scopes cost the leader what one client asking every `max_age` costs. Answers are
kept as bytes per query until the next snapshot, so a repeated question costs no work at all.
Runs on the HTTP server's own event loop (janus/api/http.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from janus.api.inspection import ScopesSnapshot

MAX_AGE = 1.0  # seconds a snapshot answers before a newer one is asked for
BUDGET = 0.05  # share of the leader's loop that /scopes snapshots may take, on average
MAX_ANSWERS = 256  # encoded answers kept per snapshot (one per distinct query)


@dataclass(frozen=True, kw_only=True, slots=True)
class Cut:
    snapshot: ScopesSnapshot
    age: float  # seconds since it was taken (monotonic)


class ScopesCache:
    def __init__(
        self,
        take: Callable[[], Awaitable[ScopesSnapshot]],
        *,
        max_age: float = MAX_AGE,
        budget: float = BUDGET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._take = take
        self._max_age = max_age
        self._budget = budget
        self._clock = clock
        self._lock = asyncio.Lock()
        self._snapshot: ScopesSnapshot | None = None
        self._taken = 0.0
        self._next_allowed = 0.0
        self.answers: dict[tuple[object, ...], bytes] = {}  # encoded answers of the current snapshot

    async def get(self) -> Cut:
        """The latest snapshot, refreshed first if it is stale and the budget allows."""
        if (cut := self._fresh()) is not None:
            return cut
        async with self._lock:  # one refresh at a time: the others wait for it
            if (cut := self._fresh()) is not None:
                return cut
            now = self._clock()
            if now < self._next_allowed:
                if self._snapshot is not None:
                    return Cut(snapshot=self._snapshot, age=now - self._taken)
                await asyncio.sleep(self._next_allowed - now)
            started = self._clock()
            try:
                snapshot = await self._take()
            except BaseException:
                self.forget()  # e.g. no longer leading: no answer from a former term
                raise
            self._snapshot, self._taken = snapshot, started
            self._next_allowed = started + max(self._max_age, snapshot.cost / self._budget)
            self.answers = {}
            return Cut(snapshot=snapshot, age=self._clock() - started)

    def remember(self, key: tuple[object, ...], answer: bytes) -> None:
        if len(self.answers) < MAX_ANSWERS:
            self.answers[key] = answer

    def forget(self) -> None:
        self._snapshot = None
        self.answers = {}

    def _fresh(self) -> Cut | None:
        age = self._clock() - self._taken
        if self._snapshot is None or age >= self._max_age:
            return None
        return Cut(snapshot=self._snapshot, age=age)
