"""How many consumers a queue has, as the broker counts them.

A passive declare of a queue answers its consumer count (and needs no permission); a queue
that does not exist has no consumer either. The leader's worker watch (service/worker_watch.py)
asks this for every ready queue.
"""

from __future__ import annotations

import contextlib

from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import ChannelNotFoundEntity

from janus.broker import BROKER_ERRORS, broker_errors


class ConsumerCounter:
    """Counts consumers on a channel of its own, opened when first needed."""

    def __init__(self, connection: AbstractConnection) -> None:
        self._connection = connection
        self._channel: AbstractChannel | None = None

    async def count(self, queue: str) -> int:
        """The consumers of `queue` now (0 if it does not exist); BrokerError if the broker fails."""
        with broker_errors(f"counting the consumers of {queue} failed"):
            if self._channel is None or self._channel.is_closed:
                self._channel = await self._connection.channel()
            raw = await self._channel.get_underlay_channel()
            try:
                declared = await raw.queue_declare(queue, passive=True)
            except ChannelNotFoundEntity:
                self._channel = None  # the failed declare closed it
                return 0
            return declared.consumer_count or 0

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            # The connection may be gone already: nothing to save.
            with contextlib.suppress(*BROKER_ERRORS):
                await self._channel.close()
