"""Job states and the values the core hands to the shell."""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class JobState(StrEnum):
    WAITING = "waiting"  # eligible now or after `eligible_at` (backoff)
    ADMITTED = "admitted"  # holds a slot: published to workers, no result yet
    SUCCEEDED = "succeeded"
    DEAD = "dead"  # max_attempts failed attempts; kept with its error history

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.DEAD)


# Job and Admission are NamedTuples rather than frozen dataclasses: the core builds one of
# each per admission, and a frozen slots dataclass sets its fields one by one through
# object.__setattr__, where a tuple is built in one step. They stay immutable values with
# the same fields, keyword construction and attribute access; `_replace` stands in for
# `dataclasses.replace`. The builders at the end of this module are the only code that
# builds or unpacks them by position (tests/unit/test_jobs.py pins their fields).


class Job(NamedTuple):
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
    cost: float = 1.0  # estimated units (intake `cost`): charged at each admission in unit limits


class Admission(NamedTuple):
    """A decision to let one job run now: what the ready message carries."""

    job_id: str
    dependency: str
    scope: str
    payload: object
    attempt: int
    admitted_at: float
    expires_at: float
    lease_deadline: float
    retry: bool = False  # the job had failed before: counts against the retry budget
    failures: int = 0  # the job's failed attempts in its current life: this is try failures + 1
    max_attempts: int | None = None  # of its dependency's retry policy (None: not known here)
    cost: float = 1.0  # the job's estimated units, charged by this admission

    @classmethod
    def of(cls, job: Job, max_attempts: int | None = None) -> Admission:
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
            retry=job.failures > 0,
            failures=job.failures,
            max_attempts=max_attempts,
            cost=job.cost,
        )


# The hot paths build values positionally through this, skipping the generated
# keyword-handling __new__. Arguments in field order: only the builders below use it for
# `Job` and `Admission`.
new_value = tuple.__new__
# A module global is read faster than an enum member through its class, at every admission.
_WAITING, _ADMITTED, _SUCCEEDED = JobState.WAITING, JobState.ADMITTED, JobState.SUCCEEDED


def first_attempt(
    job_id: str, dependency: str, scope: str, payload: object, seq: int, now: float, cost: float = 1.0
) -> Job:
    """A job just submitted: waiting, eligible at `now`, never admitted. (Positional arguments
    allowed: the scheduler calls it once per submitted job.)"""
    return new_value(
        Job,
        (
            job_id,
            dependency,
            scope,
            payload,
            seq,
            _WAITING,
            0,  # attempt
            0,  # failures
            now,  # eligible_at
            None,  # admitted_at
            None,  # expires_at
            None,  # lease_deadline
            None,  # last_error
            None,  # finished_at
            cost,
        ),
    )


def admitted(
    job: Job, now: float, expires_at: float, lease_deadline: float, max_attempts: int | None = None
) -> tuple[Job, Admission]:
    """The job admitted at `now` (its next attempt), and that admission (`max_attempts`: of its
    dependency's retry policy, for the ready message)."""
    (
        job_id,
        dependency,
        scope,
        payload,
        seq,
        _,  # state
        attempt,
        failures,
        eligible_at,
        _,  # admitted_at
        _,  # expires_at
        _,  # lease_deadline
        last_error,
        _,  # finished_at
        cost,
    ) = job  # one unpacking is cheaper than eight attribute reads
    attempt += 1
    return (
        new_value(
            Job,
            (
                job_id,
                dependency,
                scope,
                payload,
                seq,
                _ADMITTED,
                attempt,
                failures,
                eligible_at,
                now,  # admitted_at
                expires_at,
                lease_deadline,
                last_error,
                None,  # finished_at
                cost,
            ),
        ),
        new_value(
            Admission,
            (
                job_id,
                dependency,
                scope,
                payload,
                attempt,
                now,  # admitted_at
                expires_at,
                lease_deadline,
                failures > 0,  # retry
                failures,
                max_attempts,
                cost,
            ),
        ),
    )


def succeeded(job: Job, now: float) -> Job:
    """The job finished with success at `now`: everything else kept, its last error cleared."""
    (
        job_id,
        dependency,
        scope,
        payload,
        seq,
        _,  # state
        attempt,
        failures,
        eligible_at,
        admitted_at,
        expires_at,
        lease_deadline,
        _,  # last_error
        _,  # finished_at
        cost,
    ) = job
    return new_value(
        Job,
        (
            job_id,
            dependency,
            scope,
            payload,
            seq,
            _SUCCEEDED,
            attempt,
            failures,
            eligible_at,
            admitted_at,
            expires_at,
            lease_deadline,
            None,  # last_error
            now,  # finished_at
            cost,
        ),
    )
