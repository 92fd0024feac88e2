"""RabbitMQ adapter (aio-pika): connections, topology, consumers, and the confirmed publisher.

aio-pika's and aiormq's exceptions do not leave this package: what a lost, closed or
refusing broker raises becomes `BrokerError` here (`broker_errors`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aiormq.exceptions import AMQPError, ChannelInvalidStateError

from janus.errors import BrokerError

# What a lost, closed or refusing broker raises through aio-pika/aiormq. A closed channel
# raises ChannelInvalidStateError, which is a RuntimeError, not an AMQPError.
BROKER_ERRORS: tuple[type[Exception], ...] = (
    AMQPError,
    ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
)


@contextmanager
def broker_errors(what: str) -> Iterator[None]:
    """Raise what the broker's client raises inside as `BrokerError("<what>: ...")`."""
    try:
        yield
    except BROKER_ERRORS as exc:
        raise BrokerError(f"{what}: {exc!r}") from exc
