"""What the broker's version means for Janus's guarantees, told once per process."""

from __future__ import annotations

import logging

from janus.broker import connection as broker
from janus.broker.definitions import unchecked_cc_risk

log = logging.getLogger("janus.service")


def warn_unchecked_cc(connection: broker.Connection) -> None:
    """A broker whose topic permissions do not check CC and BCC lets a worker user route results
    into another dependency's queue (docs/security.md)."""
    version = broker.broker_version(connection)
    try:
        risk = unchecked_cc_risk(version)
    except ValueError:  # a version of another shape: not one this check knows
        return
    if risk is not None:
        log.warning("%s; upgrade where workers' teams do not trust each other", risk)
