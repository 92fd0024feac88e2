"""One root for every error Janus raises on purpose, with a family per layer.

Driver exceptions (asyncpg, aio-pika) are translated at their adapter's edge so
callers only ever handle these.
"""

from __future__ import annotations


class JanusError(Exception):
    """Root of every error Janus raises deliberately."""


class ConfigError(JanusError):
    """The configuration file or environment is invalid; the message names the key."""


class ConnectionSettingsError(ConfigError):
    """The broker or the database refused the connection settings themselves: a missing
    database or vhost, credentials refused, a malformed URL. Unlike an outage (refused or
    timed-out connections), reconnecting cannot mend it: the process says so and stops."""


class ProtocolError(JanusError):
    """A message on the wire does not follow docs/protocol.md."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class StoreError(JanusError):
    """PostgreSQL failed or refused; the in-memory core may be ahead of the database."""


class StatementRefused(StoreError):
    """PostgreSQL answered, and refused a statement for what it contained (bad data, a
    constraint, a trigger): unlike a lost connection, retrying the same input fails again."""


class LeadershipLost(StoreError):
    """This process no longer holds the leader lease: it must stop acting at once."""


class BrokerError(JanusError):
    """RabbitMQ failed or refused an operation."""


class TopologyMissing(BrokerError):
    """An exchange or queue a client needs does not exist: Janus has not declared it on this
    vhost (it never ran there, or not with that dependency)."""


class NotRouted(BrokerError):
    """A `mandatory` publish that no queue took: the broker returned it (basic.return), and
    the confirm that follows says nothing about it. The message is lost unless published again."""


class TopologyConflict(JanusError):
    """The broker holds an exchange or queue Janus needs with other properties (such as the
    fanout janus.results of earlier versions). Reconnecting cannot mend it: an operator must."""
