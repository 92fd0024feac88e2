"""Admissions a new term cannot tell sent from unsent: an earlier leader committed them and died
before the broker's confirms were recorded (service/outbox.py). Each may be running, so it stays
held until its lease ends; then it is returned unused, as a dead-lettered admission is, instead
of being charged as a failed attempt (a worker that died): the job waits again with its failures
unchanged, and a result of that attempt arriving before the lease's end is applied as usual."""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class MaybeSent:
    def __init__(self, admissions: Iterable[tuple[str, int, float]]) -> None:
        """`admissions`: (job_id, attempt, lease_deadline) of each."""
        self._due = [(deadline, job_id, attempt) for job_id, attempt, deadline in admissions]
        heapq.heapify(self._due)

    def __len__(self) -> int:
        return len(self._due)

    def due(self, now: float) -> list[tuple[str, int]]:
        """(job_id, attempt) of those whose lease has ended by `now`: to return before the core
        expires leases at `now` (which would charge them)."""
        found = []
        while self._due and self._due[0][0] <= now:
            _, job_id, attempt = heapq.heappop(self._due)
            found.append((job_id, attempt))
        return found
