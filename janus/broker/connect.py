"""Connecting to RabbitMQ, with the broker's refusals told apart from its outages.

Credentials refused, a vhost that does not exist (or that the user may not open) and a
malformed URL are `ConnectionSettingsError`: trying again cannot help, so the caller
says so once and stops. A refused or timed-out connection is an outage (`BrokerError`):
Janus reconnects with backoff.
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection
from aiormq.exceptions import (
    AuthenticationError,
    ConnectionNotAllowed,
    InvalidFrameError,
    ProbableAuthenticationError,
)

from janus.broker import BROKER_ERRORS
from janus.errors import BrokerError, ConnectionSettingsError
from janus.urls import check_port, redact, url_path_name, url_user

_CONNECT_ERRORS: tuple[type[Exception], ...] = (*BROKER_ERRORS, ValueError)


def settings_error(exc: BaseException, url: str) -> ConnectionSettingsError | None:
    """The refusal of the settings themselves that `exc` means, if it does."""
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


async def connect(
    url: str, *, name: str, timeout: float | None = None, heartbeat: int | None = None
) -> AbstractConnection:
    """A connection named `name`; ConnectionSettingsError or BrokerError if there is none."""
    options: dict[str, Any] = {"client_properties": {"connection_name": name}}
    if timeout is not None:
        options["timeout"] = timeout
    if heartbeat is not None:
        options["heartbeat"] = heartbeat
    try:
        check_port(url)
        connection: AbstractConnection = await aio_pika.connect(url, **options)
    except _CONNECT_ERRORS as exc:
        refused = settings_error(exc, url)
        if refused is not None:
            raise refused from exc
        raise BrokerError(f"cannot connect to RabbitMQ at {redact(url)}: {exc!r}") from exc
    return connection
