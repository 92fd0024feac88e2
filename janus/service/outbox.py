"""What the broker confirmed after a tick's commit, recorded in a later, batched statement.

Outcomes at least once: the tick that finishes a job commits its outcome message to the outbox
in the same statement (service/tick.py); the admission loop publishes it after the commit and
hands the confirmed ones here; the relay deletes them every FLUSH_EVERY seconds (never one
write per outcome, and never on the tick's connection). A term starts by publishing what earlier
terms committed and never saw confirmed: their leader may have died between the commit and the
publish, or before the confirm. So an outcome may be published twice, never not at all;
consumers de-duplicate by (job_id, outcome) (docs/protocol.md).

Admissions: once every admission of a tick is confirmed (or refused: those come back as
unpublished), the tick's `admitted_at` is recorded as sent, in the same statement. A new term
treats the admitted jobs of ticks never recorded as "maybe sent" (service/maybe_sent.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from janus.broker.publisher import Publisher
from janus.core.outbox import OutboxMessage
from janus.store.outbox import OutboxStore

log = logging.getLogger("janus.outbox")

FLUSH_EVERY = 0.5  # seconds: how long a confirmation waits to be recorded, at most (in a term)
# A sent tick matters while its admissions' leases run: kept for twice the longest lease and
# this margin (a version that lengthens a lease mid-term is covered up to twice the old one;
# beyond, a job admitted that long ago would look "maybe sent" and its lease's end go uncharged).
SENT_TICKS_MARGIN = 600.0


class OutboxRelay:
    def __init__(
        self,
        store: OutboxStore,
        publisher: Publisher,
        epoch: int,
        clock: Callable[[], float],
        longest_lease: float,
        leftovers: Callable[[], Awaitable[list[OutboxMessage]]] | None = None,
    ) -> None:
        self._store = store
        # Member mode reads earlier terms' rows by dependency (store/outbox.py): epochs are per
        # dependency there, so "written by an earlier epoch" says nothing.
        self._leftovers = leftovers or (lambda: store.unconfirmed(epoch))
        self._keep_sent = 2 * longest_lease + SENT_TICKS_MARGIN
        self._publisher = publisher
        self._epoch = epoch
        self._clock = clock
        self._confirmed: list[str] = []
        self._refused: list[OutboxMessage] = []  # published again at the next flush
        self._sent: set[float] = set()  # admitted_at of ticks whose admissions the broker all took

    def published(self, messages: Sequence[OutboxMessage], refused: Sequence[OutboxMessage]) -> None:
        """The admission loop published `messages`; the broker confirmed all but `refused`."""
        held = {m.id for m in refused}
        self._confirmed += [m.id for m in messages if m.id not in held]
        self._refused += [m for m in messages if m.id in held]

    def sent(self, admitted_at: Iterable[float]) -> None:
        """Every admission of the ticks at `admitted_at` was confirmed or refused by the broker."""
        self._sent.update(admitted_at)

    async def run(self, draining: asyncio.Event) -> None:
        """Publish what earlier terms left, then record confirmations until the term drains."""
        left = await self._leftovers()
        if left:
            refused = await self._publisher.publish_outcomes(left)
            self.published(left, refused)
            log.info("published %d outcomes earlier terms committed and never saw confirmed", len(left))
        while True:
            await self.flush()
            try:
                await asyncio.wait_for(draining.wait(), timeout=FLUSH_EVERY)
                return  # the admission loop flushes once more after its last publish
            except TimeoutError:
                pass

    async def flush(self) -> None:
        """Publish again the outcomes the broker refused; record what it confirmed."""
        if self._refused:
            again, self._refused = self._refused, []
            refused = await self._publisher.publish_outcomes(again)
            self.published(again, refused)
        if not (self._confirmed or self._sent):
            return
        ids, self._confirmed = self._confirmed, []
        sent, self._sent = self._sent, set()
        try:
            await self._store.confirmed(ids, sorted(sent), self._epoch, self._clock() - self._keep_sent)
        except BaseException:
            self._confirmed = ids + self._confirmed  # still true: recorded at the next flush
            self._sent |= sent
            raise
