"""Outcomes at least once: the relay between the outbox (store/outbox.py) and janus.outcomes.

The tick that finishes a job commits its outcome message to the outbox in the same statement
(service/tick.py); the admission loop publishes it after the commit and hands the confirmed ones
here; the relay deletes them in one statement every FLUSH_EVERY seconds (never one write per
outcome, and never on the tick's connection). A term starts by publishing what earlier terms
committed and never saw confirmed: their leader may have died between the commit and the
publish, or before the confirm. So an outcome may be published twice, never not at all;
consumers de-duplicate by (job_id, outcome) (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from janus.broker.publisher import Publisher
from janus.core.outbox import OutboxMessage
from janus.store.outbox import OutboxStore

log = logging.getLogger("janus.outbox")

FLUSH_EVERY = 0.5  # seconds: how long a confirmed outcome may stay in the outbox at most (in a term)


class OutboxRelay:
    def __init__(self, store: OutboxStore, publisher: Publisher, epoch: int) -> None:
        self._store = store
        self._publisher = publisher
        self._epoch = epoch
        self._confirmed: list[str] = []
        self._refused: list[OutboxMessage] = []  # published again at the next flush

    def published(self, messages: Sequence[OutboxMessage], refused: Sequence[OutboxMessage]) -> None:
        """The admission loop published `messages`; the broker confirmed all but `refused`."""
        held = {m.id for m in refused}
        self._confirmed += [m.id for m in messages if m.id not in held]
        self._refused += [m for m in messages if m.id in held]

    async def run(self, draining: asyncio.Event) -> None:
        """Publish what earlier terms left, then flush the confirmations until the term drains."""
        left = await self._store.unconfirmed(self._epoch)
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
        """Publish again what the broker refused; forget what it confirmed."""
        if self._refused:
            again, self._refused = self._refused, []
            refused = await self._publisher.publish_outcomes(again)
            self.published(again, refused)
        if self._confirmed:
            ids, self._confirmed = self._confirmed, []
            try:
                await self._store.delete_confirmed(ids)
            except BaseException:
                self._confirmed = ids + self._confirmed  # still confirmed: deleted at the next flush
                raise
