"""Many confirmed publishes in one write to the socket.

aiormq's `basic_publish` costs, per message: a coroutine, the channel's lock, a buffer of its
own, an entry in the connection's write queue, and a socket write and drain of its own. A tick
publishes its admissions (and its outcomes) together, so here a batch takes the lock once, is
marshalled into one buffer (the method frame, the same for every message with one exchange and
routing key, marshalled once) and written at once.

Each message still gets its own delivery tag and confirmation future in the channel's table,
exactly as `basic_publish` registers them: aiormq's own handling of acks (multiple or not),
nacks, returned `mandatory` messages (matched by message id) and a closing channel (every
pending future rejected) applies unchanged. This leans on aiormq's channel internals
(`delivery_tag`, `confirmations`, `message_id_delivery_tag`, `write_queue`), pinned by the
aiormq version in pyproject.toml and tested in tests/integration/test_batch_publish.py.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import pamqp.frame
from aiormq import spec
from aiormq.abc import ChannelFrame
from aiormq.channel import Channel
from pamqp.header import ContentHeader

FRAME_BODY = 3
FRAME_END = b"\xce"
# A batch is cut into writes of about this many bytes: a tick's worth of large payloads need not
# sit in one buffer.
WRITE_BYTES = 256 * 1024
METHOD_CACHE = 4096  # (exchange, routing key, mandatory) frames kept: one per dependency and outcome


@dataclass(frozen=True, slots=True)
class Outgoing:
    body: bytes
    exchange: str
    routing_key: str
    properties: spec.Basic.Properties  # with a message_id: a returned publish is matched by it
    mandatory: bool = False


class BatchChannel:
    """Publishes batches on one aiormq channel in confirm mode."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._methods: dict[tuple[str, str, bool], bytes] = {}

    async def publish(self, messages: Sequence[Outgoing]) -> list[asyncio.Future[object]]:
        """Write every message, in order; returns their confirmations in the same order (each
        resolves to a Basic.Ack, or fails: refused, returned unroutable, or the channel closed).
        Raises if the channel is closed or the write fails (then nothing of it is confirmed)."""
        channel = self._channel
        number = channel.number
        futures: list[asyncio.Future[object]] = []
        async with channel.lock:
            first = channel.delivery_tag + 1
            parts: list[bytes] = []
            size = 0
            queued = 0  # messages in the write queue: the broker will number these
            try:
                for message in messages:
                    channel.delivery_tag += 1
                    tag = channel.delivery_tag
                    confirmation = channel.create_future()
                    channel.confirmations[tag] = confirmation
                    message_id = message.properties.message_id
                    assert message_id, "a batched publish needs a message id"
                    channel.message_id_delivery_tag[message_id] = tag
                    confirmation.add_done_callback(_forget(channel, message_id, tag))
                    futures.append(confirmation)
                    body = message.body
                    parts.append(self._method(message.exchange, message.routing_key, message.mandatory))
                    parts.append(
                        pamqp.frame.marshal(
                            ContentHeader(body_size=len(body), properties=message.properties), number
                        )
                    )
                    step = channel.max_content_size
                    for start in range(0, len(body), step):
                        chunk = body[start : start + step]
                        parts.append(struct.pack(">BHI", FRAME_BODY, number, len(chunk)))
                        parts.append(chunk)
                        parts.append(FRAME_END)
                    size += len(body)
                    if size >= WRITE_BYTES:
                        await channel.write_queue.put(ChannelFrame(b"".join(parts), False))
                        queued, parts, size = len(futures), [], 0
                if parts:
                    # The last write is drained, like basic_publish's: the batch is on the socket.
                    drain: asyncio.Future[None] = channel.create_future()
                    await channel.write_queue.put(ChannelFrame(b"".join(parts), False, drain))
                    queued = len(futures)
                    await drain
            except BaseException:
                # The broker numbers only what it gets: the tags of what never reached the write
                # queue are taken back, so later publishes keep matching their confirms.
                channel.delivery_tag = first + queued - 1
                for unsent in range(first + queued, first + len(futures)):
                    channel.confirmations.pop(unsent, None)
                for confirmation in futures:
                    confirmation.cancel()
                raise
        return futures

    def _method(self, exchange: str, routing_key: str, mandatory: bool) -> bytes:
        key = (exchange, routing_key, mandatory)
        frame = self._methods.get(key)
        if frame is None:
            publish = spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory)
            frame = pamqp.frame.marshal(publish, self._channel.number)
            if len(self._methods) < METHOD_CACHE:
                self._methods[key] = frame
        return frame


def _forget(channel: Channel, message_id: str, tag: int) -> object:
    def forget(_: asyncio.Future[object]) -> None:
        if channel.message_id_delivery_tag.get(message_id) == tag:
            del channel.message_id_delivery_tag[message_id]

    return forget
