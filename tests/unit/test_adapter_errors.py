"""The broker adapter raises BrokerError, never its driver's exceptions: the service recovers
from BrokerError and StoreError only, and stops on anything else (a bug)."""

from __future__ import annotations

import pytest
from aiormq.exceptions import AMQPConnectionError, ChannelInvalidStateError

from janus.broker import broker_errors
from janus.broker import connection as broker
from janus.errors import BrokerError, StoreError
from janus.service.app import RECOVERABLE


@pytest.mark.parametrize(
    "error",
    [
        AMQPConnectionError("gone"),  # the AMQP client's own
        ChannelInvalidStateError("closed"),  # a closed channel: a RuntimeError, not an AMQPError
        ConnectionResetError("reset"),  # the socket
        TimeoutError(),
    ],
)
def test_driver_errors_become_broker_errors(error: Exception) -> None:
    with pytest.raises(BrokerError, match="publishing failed") as raised, broker_errors("publishing failed"):
        raise error
    assert raised.value.__cause__ is error


def test_other_errors_pass_through() -> None:
    with pytest.raises(ZeroDivisionError), broker_errors("publishing failed"):
        raise ZeroDivisionError  # a bug stays a bug


async def test_an_unreachable_broker_is_a_broker_error() -> None:
    with pytest.raises(BrokerError, match="cannot connect to RabbitMQ"):
        await broker.connect("amqp://guest:guest@127.0.0.1:1/", name="test", timeout=2.0)


def test_the_service_recovers_from_the_adapters_errors_only() -> None:
    # Not from a driver's exception caught raw: an untranslated one is a bug in an adapter.
    assert set(RECOVERABLE) == {StoreError, BrokerError}
