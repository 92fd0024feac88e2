"""RabbitMQ adapter (aio-pika): topology, consumers, and the confirmed publisher."""

from __future__ import annotations

from aiormq.exceptions import AMQPError, ChannelInvalidStateError

# What a lost, closed or refusing broker raises through aio-pika/aiormq. A closed channel
# raises ChannelInvalidStateError, which is a RuntimeError, not an AMQPError.
BROKER_ERRORS: tuple[type[Exception], ...] = (
    AMQPError,
    ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
)
