"""A connection to RabbitMQ: opening it, noticing when it or a channel of it closes, closing it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import NoReturn
from urllib.parse import parse_qs, urlsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection

from janus.broker import BROKER_ERRORS, broker_errors
from janus.errors import BrokerError

log = logging.getLogger("janus.broker")

Connection = AbstractConnection
CLOSE_TIMEOUT = 2.0  # closing a connection that may be dead
_CLOSING_ERRORS: tuple[type[Exception], ...] = (*BROKER_ERRORS, RuntimeError)


async def connect(
    url: str, *, name: str, timeout: float | None = None, heartbeat: int | None = None
) -> Connection:
    """A connection named `name` (shown by the broker); `heartbeat` in seconds unless the URL
    sets its own (0: the broker's choice)."""
    if "heartbeat" in parse_qs(urlsplit(url).query):  # the URL's own setting wins
        heartbeat = None
    with broker_errors("cannot connect to RabbitMQ"):
        return await aio_pika.connect(
            url, timeout=timeout, heartbeat=heartbeat, client_properties={"connection_name": name}
        )


async def close(connection: Connection) -> None:
    """Close it if it is open, within CLOSE_TIMEOUT; a connection that is dead already is left."""
    if connection.is_closed:
        return
    try:
        await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT)
    except _CLOSING_ERRORS as exc:  # it may be dead already: nothing to save
        log.debug("closing the broker connection: %r", exc)


async def closing(connection: Connection, channels: Iterable[tuple[str, AbstractChannel]]) -> NoReturn:
    """Raise BrokerError as soon as the connection or one of these (name, channel) closes: an idle
    user would otherwise notice only at its next publish or ack (heartbeats catch silent deaths)."""
    watched = {asyncio.ensure_future(connection.closed()): "the connection to RabbitMQ"}
    for what, channel in channels:
        watched[asyncio.ensure_future(channel.closed())] = what
    try:
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in watched:
            waiter.cancel()
    raise BrokerError(f"{watched[next(iter(done))]} closed")
