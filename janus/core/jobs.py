"""Job states and the values the core hands to the shell."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobState(StrEnum):
    WAITING = "waiting"  # eligible now or after `eligible_at` (backoff)
    ADMITTED = "admitted"  # holds a slot: published to workers, no result yet
    SUCCEEDED = "succeeded"
    DEAD = "dead"  # max_attempts failed attempts; kept with its last error

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.DEAD)


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """A job as the store keeps it. Immutable: every transition makes a new value."""

    job_id: str
    dependency: str
    scope: str
    payload: object  # any JSON value
    seq: int = 0  # submission order (per deployment, increasing): a scope's first attempts go in this order
    state: JobState = JobState.WAITING
    attempt: int = 0  # sequence number of the latest admission (1, 2, …)
    failures: int = 0  # failed attempts so far (results of failure, lease time-outs)
    eligible_at: float = 0.0
    admitted_at: float | None = None
    expires_at: float | None = None
    lease_deadline: float | None = None
    last_error: str | None = None
    finished_at: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Admission:
    """A decision to let one job run now: what the ready message carries."""

    job_id: str
    dependency: str
    scope: str
    payload: object
    attempt: int
    admitted_at: float
    expires_at: float
    lease_deadline: float

    @classmethod
    def of(cls, job: Job) -> Admission:
        """The admission of a job in the ADMITTED state: everything is already on the job."""
        if job.admitted_at is None or job.expires_at is None or job.lease_deadline is None:
            raise ValueError(f"job {job.job_id!r} is not admitted")
        return cls(
            job_id=job.job_id,
            dependency=job.dependency,
            scope=job.scope,
            payload=job.payload,
            attempt=job.attempt,
            admitted_at=job.admitted_at,
            expires_at=job.expires_at,
            lease_deadline=job.lease_deadline,
        )
