"""Many confirmed publishes in one write to the socket.

aiormq's `basic_publish` costs, per message: a coroutine, the channel's lock, a buffer of its
own, an entry in the connection's write queue, and a socket write and drain of its own. A tick
publishes its admissions (and its outcomes) together, so here a batch takes the lock once, is
marshalled into one buffer (the method frame, the same for every message with one exchange and
routing key, marshalled once) and written at once. When the lock is free and the write queue
has room, `start` queues the batch without awaiting anything: the caller's next step (the
next tick's decisions) runs after the batch is already on its way to the socket.

Each message still gets its own delivery tag in the channel's table of confirmations, and its
message id in the table of returns, as `basic_publish` registers them: aiormq's own handling of
acks (multiple or not), nacks and returned `mandatory` messages applies unchanged. What stands
in the table is a light slot rather than a future (see `_Slot`); the batch waits on one future,
which a closing channel fails like any other. This leans on aiormq's channel internals
(`delivery_tag`, `confirmations`, `message_id_delivery_tag`, `write_queue`, `lock` and the lock
it wraps, `_Channel__lock`): checked
when a channel is opened (`BatchChannel` fails at once if an aiormq release renamed one) and
tested on a real broker in tests/integration/test_batch_publish.py (aiormq 7.2).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar, cast

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
LOCK = "_Channel__lock"  # aiormq's Channel.__lock, name-mangled: `lock` is a context manager around it
# What the batch uses of aiormq's channel beyond its public methods.
INTERNALS = (
    LOCK,
    "confirmations",
    "delivery_tag",
    "lock",
    "max_content_size",
    "message_id_delivery_tag",
    "number",
    "write_queue",
)
METHOD_CACHE = 4096  # (exchange, routing key, mandatory) frames kept: one per dependency and outcome
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outgoing:
    body: bytes
    exchange: str
    routing_key: str
    properties: spec.Basic.Properties  # with a message_id: a returned publish is matched by it
    mandatory: bool = False


class Later(Generic[T]):
    """A coroutine function's call, made when this is first awaited. What `start` hands back
    may be dropped unawaited (a term that ends before the task awaiting its confirms runs): a
    coroutine made at once would then warn "never awaited"; this begins nothing and says nothing.
    Awaited once, like the coroutine it stands for."""

    __slots__ = ("_call",)

    def __init__(self, call: Callable[[], Coroutine[Any, Any, T]]) -> None:
        self._call: Callable[[], Coroutine[Any, Any, T]] | None = call

    def __await__(self) -> Generator[Any, None, T]:
        call, self._call = self._call, None
        if call is None:
            raise RuntimeError("already awaited: its result went to the first await")
        return call().__await__()


class _Confirms:
    """The confirmations of one batch, gathered: one future for the lot (made by the channel, so
    that a closing channel fails it, as it fails basic_publish's futures)."""

    __slots__ = ("future", "left", "results")

    def __init__(self, count: int, future: asyncio.Future[list[object]]) -> None:
        self.future = future
        self.left = count
        self.results: list[object] = [None] * count

    def settle(self, index: int, value: object) -> None:
        self.results[index] = value
        self.left -= 1
        if self.left == 0 and not self.future.done():
            self.future.set_result(self.results)


class _Slot:
    """One message's place in the channel's table of confirmations. aiormq calls `done()`,
    `set_result` (an ack) and `set_exception` (a nack, a returned message) on it as on a
    future; a future per message would cost a loop callback per done-callback on top."""

    __slots__ = ("_channel", "_confirms", "_done", "_index", "_message_id", "_tag")

    def __init__(self, channel: Channel, confirms: _Confirms, index: int, message_id: str, tag: int) -> None:
        self._channel = channel
        self._confirms = confirms
        self._index = index
        self._message_id = message_id
        self._tag = tag
        self._done = False

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False

    def set_result(self, value: object) -> None:
        self._settle(value)

    def set_exception(self, exception: BaseException) -> None:
        self._settle(exception)

    def _settle(self, value: object) -> None:
        if self._done:
            return
        self._done = True
        self.forget()
        self._confirms.settle(self._index, value)

    def forget(self) -> None:
        """Out of the table of returns (matched by message id) if this tag is still its entry."""
        ids = self._channel.message_id_delivery_tag
        if ids.get(self._message_id) == self._tag:
            del ids[self._message_id]


class BatchChannel:
    """Publishes batches on one aiormq channel in confirm mode."""

    def __init__(self, channel: Channel) -> None:
        missing = [name for name in INTERNALS if not hasattr(channel, name)]
        if missing:
            raise RuntimeError(f"this aiormq's channel lacks {missing}: batched publishing needs them")
        self._channel = channel
        # The lock itself (aiormq's `lock` is a context manager around it): free means nobody is
        # between taking delivery tags and queueing frames.
        self._lock: asyncio.Lock = getattr(channel, LOCK)
        self._methods: dict[tuple[str, str, bool], bytes] = {}

    async def publish(self, messages: Sequence[Outgoing]) -> list[object]:
        """Write every message, in order, and wait for every confirmation; returns them in the
        same order: a Basic.Ack, or the exception aiormq gives a refused (nack) or returned
        (unroutable, mandatory) message. Raises if the channel closes or the write fails."""
        return await self.start(messages)

    def start(self, messages: Sequence[Outgoing]) -> Awaitable[list[object]]:
        """`publish`, begun now: when the channel's lock is free and the write queue has room,
        the batch is in the write queue when this returns (no await: the caller's next step
        cannot overtake it); otherwise the awaitable, once awaited, takes the lock and writes.
        Dropped unawaited, it warns nothing (`Later`); a batch not yet written then never is."""
        channel = self._channel
        if not messages:
            done: asyncio.Future[list[object]] = channel.create_future()
            done.set_result([])
            return done
        writes = self._marshal(messages)
        queue = channel.write_queue
        room = queue.maxsize - queue.qsize() if queue.maxsize > 0 else len(writes)
        # Tags and frames stay in order with any other publish: whoever holds the lock may be
        # between taking tags and queueing its frames; with it free, nobody is.
        if channel.is_closed or self._lock.locked() or room < len(writes):
            return Later(partial(self._locked_publish, messages, writes))
        confirms = _Confirms(len(messages), channel.create_future())
        self._register(messages, confirms)
        for data, _ in writes:
            queue.put_nowait(ChannelFrame(data, False))
        return confirms.future

    def _marshal(self, messages: Sequence[Outgoing]) -> list[tuple[bytes, int]]:
        """The batch's writes, each with the count of messages it completes so far."""
        channel = self._channel
        number = channel.number
        step = channel.max_content_size
        writes: list[tuple[bytes, int]] = []
        parts: list[bytes] = []
        size = 0
        for index, message in enumerate(messages):
            body = message.body
            parts.append(self._method(message.exchange, message.routing_key, message.mandatory))
            parts.append(
                pamqp.frame.marshal(ContentHeader(body_size=len(body), properties=message.properties), number)
            )
            for start in range(0, len(body), step):
                chunk = body[start : start + step]
                parts.append(struct.pack(">BHI", FRAME_BODY, number, len(chunk)))
                parts.append(chunk)
                parts.append(FRAME_END)
            size += len(body)
            if size >= WRITE_BYTES:
                writes.append((b"".join(parts), index + 1))
                parts, size = [], 0
        if parts:
            writes.append((b"".join(parts), len(messages)))
        return writes

    def _register(self, messages: Sequence[Outgoing], confirms: _Confirms) -> int:
        """Take the batch's delivery tags and put its slots in aiormq's tables; the first tag."""
        channel = self._channel
        confirmations = cast(dict[int, Any], channel.confirmations)
        ids = channel.message_id_delivery_tag
        first = channel.delivery_tag + 1
        for index, message in enumerate(messages):
            tag = first + index
            message_id = message.properties.message_id
            assert message_id, "a batched publish needs a message id"
            confirmations[tag] = _Slot(channel, confirms, index, message_id, tag)
            ids[message_id] = tag
        channel.delivery_tag = first + len(messages) - 1
        return first

    async def _locked_publish(
        self, messages: Sequence[Outgoing], writes: list[tuple[bytes, int]]
    ) -> list[object]:
        channel = self._channel
        confirms = _Confirms(len(messages), channel.create_future())
        async with channel.lock:
            first = self._register(messages, confirms)
            queued = 0  # messages in the write queue: the broker will number these
            try:
                for number, (data, upto) in enumerate(writes):
                    if number < len(writes) - 1:
                        await channel.write_queue.put(ChannelFrame(data, False))
                    else:
                        # The last write is drained, like basic_publish's: the batch is on the socket.
                        drain: asyncio.Future[None] = channel.create_future()
                        await channel.write_queue.put(ChannelFrame(data, False, drain))
                        queued = upto
                        await drain
                    queued = upto
            except BaseException:
                # The broker numbers only what it gets: the tags of what never reached the write
                # queue are taken back, so later publishes keep matching their confirms.
                confirmations = cast(dict[int, Any], channel.confirmations)
                channel.delivery_tag = first + queued - 1
                for unsent in range(first + queued, first + len(messages)):
                    slot = confirmations.pop(unsent, None)
                    if isinstance(slot, _Slot):
                        slot.forget()
                confirms.future.cancel()
                raise
        return await confirms.future

    def _method(self, exchange: str, routing_key: str, mandatory: bool) -> bytes:
        key = (exchange, routing_key, mandatory)
        frame = self._methods.get(key)
        if frame is None:
            publish = spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory)
            frame = pamqp.frame.marshal(publish, self._channel.number)
            if len(self._methods) < METHOD_CACHE:
                self._methods[key] = frame
        return frame
