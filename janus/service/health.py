"""What this process is doing right now, for /readyz, the metrics and the logs.

Only the event loop writes it; the HTTP thread asks the loop to read it (see
janus.api.http), so a loop that no longer answers is itself the failed check.

In member mode (scale-out, docs/scale-out.md) readiness is a member's: `member_view`, a
callable the service passes in (janus/service/owners.py builds it from the database), says
what the database shows of this member; the rule is in `member_readiness` and
docs/operations.md ("Readiness of a member").
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
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


@dataclass(frozen=True, kw_only=True, slots=True)
class MemberView:
    """What the last read of the database shows of one member, and what it admits for."""

    member: str
    read_age: float  # seconds since that read (monotonic): a stale read proves nothing
    live: bool  # its member row is live on the database's clock
    heartbeat_age: float | None  # seconds since its last heartbeat, on the database's clock
    share: tuple[str, ...]  # what the assignment targets to it in that read (keep, claim, wait)
    held: Mapping[str, int]  # the live leases it holds there: dependency -> epoch
    # What the process admits for (dependency -> epoch, its lane rebuilt); None: not told.
    admitting: Mapping[str, int] | None = None


MemberViewer = Callable[[], MemberView | None]


def member_readiness(view: MemberView | None, fresh_within: float) -> tuple[bool, dict[str, Any]]:
    """Ready: a member that heartbeats (its row live in a read at most `fresh_within` old) and
    has claimed its share (holds every dependency the assignment targets to it, and admits for
    each in the epoch it holds), or stands by with nothing assigned. Not ready while it waits
    for a handover or has a free dependency still to claim, or is rebuilding one."""
    if view is None:
        return False, {"detail": "no read of the members yet"}
    body: dict[str, Any] = {
        "member": view.member,
        "share": list(view.share),
        "held": dict(sorted(view.held.items())),
        "heartbeat_age_seconds": None if view.heartbeat_age is None else round(view.heartbeat_age, 3),
        "read_seconds_ago": round(view.read_age, 3),
    }
    missing = [d for d in view.share if d not in view.held]
    admitting = view.admitting
    rebuilding = (
        []
        if admitting is None
        else [d for d in view.share if d in view.held and admitting.get(d) != view.held[d]]
    )
    if view.read_age > fresh_within:
        detail = f"the members were last read {view.read_age:.1f}s ago"
    elif not view.live:
        detail = "its member row is not live in the database"
    elif missing:
        detail = f"not yet holding its share: {', '.join(missing)}"
    elif rebuilding:
        detail = f"not yet admitting for {', '.join(rebuilding)}"
    else:
        detail = "holds its share" if view.share else "nothing assigned: standing by"
        return True, body | {"detail": detail}
    return False, body | {"detail": detail}


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
    # Member mode: what the database shows of this member (janus/service/owners.py); None: a
    # single leader, whose rule is unchanged.
    member_view: MemberViewer | None = None

    def become(self, role: Role, *, epoch: int | None = None, detail: str = "") -> None:
        self.role = role
        self.epoch = epoch
        self.detail = detail
        self.changed_at = time.monotonic()

    def polled(self, reached: bool) -> None:
        if reached:
            self.database_answered_at = time.monotonic()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: leading with consumers running, or a standby whose database answers; in member
        mode, a member that heartbeats and holds its share (member_readiness)."""
        now = time.monotonic()
        member: dict[str, Any] | None = None
        if self.member_view is not None:
            if self.role in (Role.STARTING, Role.RECOVERING, Role.STOPPING):
                ready, member = False, None
            else:
                ready, member = member_readiness(self.member_view(), self.standby_fresh_within)
        elif self.role is Role.LEADING:
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
        if self.member_view is not None:
            body["mode"] = "member"
            if member is not None:
                body["member"] = member
        return ready, body
