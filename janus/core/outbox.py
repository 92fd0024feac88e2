"""An outcome message on its way to janus.outcomes, as the outbox keeps it (a value shared by the
tick that writes it, the store that keeps it until confirmed, and the publisher)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class OutboxMessage:
    """Published at least once: kept in the store from the commit of the tick that finished the
    job until the broker confirms it."""

    id: str  # unique per message (a UUID): a revived job that dies again has a second one
    job_id: str
    routing_key: str  # on janus.outcomes: "<dependency>.<outcome>"
    body: bytes  # the outcome message (docs/protocol.md)
