"""The recent changes (policy versions, pauses, overrides) that /status, the page and GET /changes
show: a copy the leader keeps, so that no HTTP request ever queries PostgreSQL.

The leader refreshes it when the history can have changed (at the start of its term, and after
it applied a version or a steering row: janus/service/changes.py), at most once a second; the
HTTP server's thread only reads it. Each refresh replaces one immutable value, so a reader sees
the old list or the new one, never half of each.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SHOWN = 20  # the newest changes kept (and served), at most


@dataclass(frozen=True, kw_only=True, slots=True)
class Known:
    changes: tuple[Mapping[str, Any], ...]  # newest first, JSON-ready
    refreshed_at: float  # Unix seconds
    encoded: bytes  # GET /changes's answer, encoded once per refresh


class RecentChanges:
    def __init__(self) -> None:
        self._known: Known | None = None

    def publish(self, changes: Sequence[Mapping[str, Any]], now: float) -> None:
        """From the leader's loop: the newest changes as the database has them now."""
        shown = tuple(changes[:SHOWN])
        body = {"leading": True, "refreshed_at": now, "changes": list(shown)}
        self._known = Known(changes=shown, refreshed_at=now, encoded=json.dumps(body).encode())

    def forget(self) -> None:
        """The term ended: a former leader shows none (the next leader's are the ones to read)."""
        self._known = None

    def listed(self) -> list[Mapping[str, Any]] | None:
        """The changes, newest first; None when this process does not lead (or has not read them yet)."""
        known = self._known
        return None if known is None else list(known.changes)

    def encoded(self) -> bytes:
        known = self._known
        if known is None:
            return json.dumps({"leading": False, "refreshed_at": None, "changes": []}).encode()
        return known.encoded
