"""The jobs the core holds, shared by every lane of the scheduler: the non-terminal jobs, what
changed since the store last drained it, and the lease deadlines of the admissions held."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from janus.core.jobs import Job, JobState

_ADMITTED = JobState.ADMITTED  # a module global reads faster than a member through its class, every tick


@dataclass(kw_only=True, slots=True)
class Ledger:
    """The jobs the core holds, shared by its lanes."""

    jobs: dict[str, Job] = field(
        default_factory=dict
    )  # non-terminal, in memory (first attempts may be stored only)
    changed: dict[str, Job] = field(default_factory=dict)  # since the last drain, latest state each
    # Jobs whose current attempt failed by its lease running out, waiting for their retry:
    # a success for that attempt may still arrive, and completes the job (docs/protocol.md).
    # In memory only: after a restart such a success is stale, which errs on the safe side.
    lapsed: dict[str, int] = field(default_factory=dict)
    # Lease deadlines, lazy (finished jobs' entries stay until they come up or reach the head:
    # `next_deadline`): one entry per batch of admissions sharing a deadline, (deadline,
    # serial, [(job_id, attempt), ...]), so that an admission costs a list append rather than
    # a push on a heap as long as the leases held. `Scheduler.expire_leases` handles due entries in (deadline, job_id, attempt) order.
    leases: list[tuple[float, int, list[tuple[str, int]]]] = field(default_factory=list)
    lease_serial: itertools.count[int] = field(default_factory=itertools.count)

    def add_leases(self, deadline: float, batch: list[tuple[str, int]]) -> None:
        heapq.heappush(self.leases, (deadline, next(self.lease_serial), batch))

    def next_deadline(self) -> float | None:
        """The earliest lease deadline of an admission still held, if any.

        Stale entries (the job finished, or its attempt ended) are dropped from the head first:
        a wakeup for them would find nothing to expire. An attempt number only grows, so an
        entry once stale stays stale, and `expire_leases` would have skipped it anyway. Each
        entry is dropped once: O(1) amortized per admission."""
        leases, jobs = self.leases, self.jobs
        while leases:
            batch = leases[0][2]
            while batch:
                job_id, attempt = batch[-1]
                job = jobs.get(job_id)
                if job is not None and job.state is _ADMITTED and job.attempt == attempt:
                    return leases[0][0]
                batch.pop()  # the order within a batch does not matter: expire_leases sorts
            heapq.heappop(leases)
        return None
