"""The leader's copy of the recent changes (janus/api/changes.py), refreshed on its own budget.

The history changes only when a version or a steering row is recorded, and the status cares once
the leader applied it: so the copy is read at the start of a term and after the steerer applied
something, never more than once per `MIN_GAP`, with one small indexed query (`recent_changes`).
A status request never reaches the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any

from janus.api.changes import SHOWN, RecentChanges
from janus.errors import StoreError
from janus.store.repository import Store
from janus.store.steering import Change

log = logging.getLogger("janus.changes")

MIN_GAP = 1.0  # seconds between two reads at the least: a burst of changes costs one read
RETRY_AFTER = 5.0  # seconds before reading again when a read failed
DIFF_LINES = 12  # of a version's diff, in the copy (`janus history` shows it whole)


def _unix(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def describe(change: Change) -> dict[str, Any]:
    """One change as /changes and /status show it (JSON-ready)."""
    if change.what == "version":
        lines = (change.diff or "").splitlines()
        detail = "\n".join(
            lines[:DIFF_LINES] + ([f"... {len(lines) - DIFF_LINES} more"] if len(lines) > DIFF_LINES else [])
        )
        what, number = "version", change.id
    else:
        parts = []
        if change.concurrency is not None:
            parts.append(f"concurrency {change.concurrency}")
        if change.rate_limits is not None:
            parts.append("rate " + (", ".join(change.rate_limits) or "unlimited"))
        detail, what, number = ", ".join(parts), change.kind or "steering", None
    return {
        "what": what,  # version, pause, resume, override, clear
        "version": number,
        "dependency": change.dependency,
        "actor": change.actor,
        "reason": change.reason,
        "at": _unix(change.created_at),
        "until": change.until,
        "detail": detail,
        "applied": change.applied_at is not None,
    }


class ChangesReader:
    """A supervised task of the term: `wanted()` asks for a read; the task reads, then publishes."""

    def __init__(self, store: Store, changes: RecentChanges) -> None:
        self._store = store
        self._changes = changes
        self._wanted = asyncio.Event()
        self._wanted.set()  # the term's first read

    def wanted(self) -> None:
        self._wanted.set()

    async def run(self, draining: asyncio.Event) -> None:
        try:
            while not draining.is_set():
                if not await self._asked(draining):
                    return
                self._wanted.clear()
                gap = MIN_GAP
                try:
                    recent = await self._store.policy_log.recent(SHOWN)
                    self._changes.publish([describe(change) for change in recent], time.time())
                except StoreError as exc:  # the status keeps the last copy; the term goes on
                    log.warning("could not read the recent changes (the status shows older ones): %s", exc)
                    self._wanted.set()
                    gap = RETRY_AFTER
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(draining.wait(), timeout=gap)
        finally:
            self._changes.forget()

    async def _asked(self, draining: asyncio.Event) -> bool:
        """Until a read is wanted (True) or the term drains (False)."""
        wanted = asyncio.ensure_future(self._wanted.wait())
        stopping = asyncio.ensure_future(draining.wait())
        try:
            await asyncio.wait([wanted, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            wanted.cancel()
            stopping.cancel()
        return self._wanted.is_set()
