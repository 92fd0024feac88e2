"""What a worker remembers of the admissions it acked, to recognise them when they come back.

An ack has no confirm: if the broker closes the connection before reading it, the broker
delivers the admission again (flagged `redelivered`) although the worker acked and started
it. Started again, the job would run twice and its dependency would see one call more than
its rate and concurrency allow; handed back to Janus, it would free a slot the first copy
still holds. So a worker remembers every admission it acked until its lease ends (after
that Janus has given up on it, and a copy can no longer break a limit), and drops a
redelivered copy of one of them: acked, neither started nor reported."""

from __future__ import annotations

from collections import OrderedDict

# With no lease (an older Janus), how long past expires_at to remember an acked admission.
FORGET_WITHOUT_LEASE = 60.0


class AckedAdmissions:
    """(job_id, attempt) of the admissions acked here, each until its lease ends."""

    def __init__(self) -> None:
        self._forget_at: OrderedDict[tuple[str, int], float] = OrderedDict()

    def remember(
        self, job_id: str, attempt: int, expires_at: float, lease_expires_at: float | None, now: float
    ) -> None:
        self._forget_expired(now)
        until = lease_expires_at if lease_expires_at is not None else expires_at + FORGET_WITHOUT_LEASE
        self._forget_at[(job_id, attempt)] = until

    def started_here(self, job_id: str, attempt: int, now: float) -> bool:
        """True for an admission this worker acked whose lease has not ended."""
        until = self._forget_at.get((job_id, attempt))
        return until is not None and now < until

    def __len__(self) -> int:
        return len(self._forget_at)

    def _forget_expired(self, now: float) -> None:
        # Oldest first; one with a longer lease ahead only delays forgetting the next ones.
        while self._forget_at:
            key, until = next(iter(self._forget_at.items()))
            if until > now:
                return
            del self._forget_at[key]
