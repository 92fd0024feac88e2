"""A connection to RabbitMQ: opening it, noticing when it or a channel of it closes, closing it.

Opening tells the broker's refusals from its outages: credentials refused, a vhost that does
not exist (or that the user may not open) and a malformed URL are `ConnectionSettingsError`,
which trying again cannot mend, so the caller says so once and stops; a refused or timed-out
connection is an outage (`BrokerError`), and Janus reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import NoReturn
from urllib.parse import parse_qs, urlsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import (
    AuthenticationError,
    ConnectionNotAllowed,
    InvalidFrameError,
    ProbableAuthenticationError,
)

from janus.broker import BROKER_ERRORS
from janus.errors import BrokerError, ConnectionSettingsError
from janus.urls import check_port, redact, split_urls, url_path_name, url_user

log = logging.getLogger("janus.broker")

Connection = AbstractConnection
CLOSE_TIMEOUT = 2.0  # closing a connection that may be dead
_CLOSING_ERRORS: tuple[type[Exception], ...] = (*BROKER_ERRORS, RuntimeError)
_CONNECT_ERRORS: tuple[type[Exception], ...] = (*BROKER_ERRORS, ValueError)  # ValueError: the URL


async def connect(
    url: str, *, name: str, timeout: float | None = None, heartbeat: int | None = None
) -> Connection:
    """A connection named `name` (shown by the broker) to the first node of `url` that answers
    (`split_urls`: a cluster's nodes in the order to try them); `heartbeat` in seconds unless
    the URL sets its own (0: the broker's choice).

    Each reconnection starts again from the first node: a node that is down refuses at once,
    so the next is tried. A refusal of the settings (credentials, vhost, URL) is raised at
    once: another node of the same cluster would refuse them too. BrokerError once every node
    failed, naming each."""
    urls = split_urls(url) or [url]
    failures: list[str] = []
    for one in urls:
        try:
            return await _connect_one(one, name=name, timeout=timeout, heartbeat=heartbeat)
        except BrokerError as exc:
            if len(urls) == 1:
                raise
            failures.append(str(exc))
            log.info("%s; trying the next node", exc)
    raise BrokerError(f"no node of the RabbitMQ cluster answered: {'; '.join(failures)}")


async def _connect_one(url: str, *, name: str, timeout: float | None, heartbeat: int | None) -> Connection:
    try:
        check_port(url)
        if "heartbeat" in parse_qs(urlsplit(url).query):  # the URL's own setting wins
            heartbeat = None
        return await aio_pika.connect(
            url, timeout=timeout, heartbeat=heartbeat, client_properties={"connection_name": name}
        )
    except _CONNECT_ERRORS as exc:
        refused = settings_error(exc, url)
        if refused is not None:
            raise refused from exc
        raise BrokerError(f"cannot connect to RabbitMQ at {redact(url)}: {exc!r}") from exc


def settings_error(exc: BaseException, url: str) -> ConnectionSettingsError | None:
    """The refusal of the connection settings themselves that `exc` means, if it does."""
    where = f"RabbitMQ at {redact(url)}"
    if isinstance(exc, ProbableAuthenticationError | AuthenticationError):
        return ConnectionSettingsError(f"{where} refused the credentials of user {url_user(url)!r}")
    if isinstance(exc, ConnectionNotAllowed) or (
        isinstance(exc, InvalidFrameError) and "Connection.Close" in str(exc)
    ):
        # The broker closes the handshake at Connection.Open: the vhost is missing, or closed to the user.
        vhost = url_path_name(url) or "/"
        return ConnectionSettingsError(
            f"{where} refused vhost {vhost!r}: it does not exist, or user {url_user(url)!r} "
            f"has no permissions on it"
        )
    if isinstance(exc, ValueError):
        return ConnectionSettingsError(f"invalid AMQP URL {redact(url)}: {exc}")
    return None


def broker_version(connection: Connection) -> str | None:
    """The version the broker announced at the handshake ("3.10.8"), if it did."""
    transport = getattr(connection, "transport", None)  # aio_pika.Connection's; its interface does not say
    raw = getattr(transport, "connection", None)
    properties = getattr(raw, "server_properties", None) or {}
    version = properties.get("version")
    if isinstance(version, bytes):
        version = version.decode(errors="replace")
    return version if isinstance(version, str) else None


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
