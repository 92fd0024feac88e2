"""What this process is doing right now, for /readyz, the metrics and the logs.

Only the event loop writes it; the HTTP thread asks the loop to read it (see
janus.api.http), so a loop that no longer answers is itself the failed check.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    STARTING = "starting"  # connecting, migrating
    STANDBY = "standby"  # polling for the lease
    REBUILDING = "rebuilding"  # holds the lease, connecting the broker and rebuilding the core
    LEADING = "leading"  # consumers running: admitting
    RECOVERING = "recovering"  # lost the broker or the database: reconnecting with backoff
    STOPPING = "stopping"


@dataclass(kw_only=True)
class Health:
    identity: uuid.UUID
    # A standby is ready only if the database answered one of its polls this recently.
    standby_fresh_within: float
    role: Role = Role.STARTING
    epoch: int | None = None
    database_answered_at: float | None = None  # time.monotonic() of the last standby poll that got an answer
    detail: str = ""
    changed_at: float = field(default_factory=time.monotonic)

    def become(self, role: Role, *, epoch: int | None = None, detail: str = "") -> None:
        self.role = role
        self.epoch = epoch
        self.detail = detail
        self.changed_at = time.monotonic()

    def polled(self, reached: bool) -> None:
        if reached:
            self.database_answered_at = time.monotonic()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: leading with consumers running, or a standby whose database answers."""
        now = time.monotonic()
        if self.role is Role.LEADING:
            ready = True
        elif self.role is Role.STANDBY:
            answered = self.database_answered_at
            ready = answered is not None and now - answered <= self.standby_fresh_within
        else:
            ready = False
        body: dict[str, Any] = {
            "ready": ready,
            "role": self.role.value,
            "identity": str(self.identity),
            "epoch": self.epoch,
            "for_seconds": round(now - self.changed_at, 3),
        }
        if self.detail:
            body["detail"] = self.detail
        return ready, body
