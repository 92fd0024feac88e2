"""The positional builders of `Job` and `Admission` put every value in its field.

The core builds these NamedTuples by position on its hot path (`janus.core.jobs`), where
swapping two fields of the same type would pass the type checker. So: the field order is
pinned here, and every builder is compared with keyword construction, on values that differ
in every field, so that any swap shows.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from janus.core.jobs import Admission, Job, JobState, admitted, first_attempt, succeeded

JOB_FIELDS = (
    "job_id",
    "dependency",
    "scope",
    "payload",
    "seq",
    "state",
    "attempt",
    "failures",
    "eligible_at",
    "admitted_at",
    "expires_at",
    "lease_deadline",
    "last_error",
    "finished_at",
    "cost",
)
ADMISSION_FIELDS = (
    "job_id",
    "dependency",
    "scope",
    "payload",
    "attempt",
    "admitted_at",
    "expires_at",
    "lease_deadline",
    "retry",
    "failures",
    "max_attempts",
    "cost",
)

# Every field a value of its own, and no two of one type alike.
DISTINCT = Job(
    job_id="job",
    dependency="dep",
    scope="scope",
    payload={"p": 1},
    seq=11,
    state=JobState.WAITING,
    attempt=3,
    failures=2,
    eligible_at=1.5,
    admitted_at=2.5,
    expires_at=3.5,
    lease_deadline=4.5,
    last_error="boom",
    finished_at=5.5,
    cost=6.25,
)


def test_the_field_order_is_pinned() -> None:
    # The builders depend on it: reordering a class's fields must come with its builders.
    assert Job._fields == JOB_FIELDS
    assert Admission._fields == ADMISSION_FIELDS


def test_first_attempt_puts_every_value_in_its_field() -> None:
    job = first_attempt(job_id="job", dependency="dep", scope="scope", payload=[1], seq=7, now=9.5, cost=3.0)
    assert job == Job(
        job_id="job", dependency="dep", scope="scope", payload=[1], seq=7, eligible_at=9.5, cost=3.0
    )
    assert job.state is JobState.WAITING


def test_admitted_puts_every_value_in_its_field() -> None:
    job, admission = admitted(DISTINCT, 20.0, 21.0, 22.0, 6)
    assert job == DISTINCT._replace(
        state=JobState.ADMITTED,
        attempt=4,
        admitted_at=20.0,
        expires_at=21.0,
        lease_deadline=22.0,
        finished_at=None,
    )
    assert admission == Admission(
        job_id="job",
        dependency="dep",
        scope="scope",
        payload={"p": 1},
        attempt=4,
        admitted_at=20.0,
        expires_at=21.0,
        lease_deadline=22.0,
        retry=True,
        failures=2,
        max_attempts=6,
        cost=6.25,
    )
    assert admission == Admission.of(job, max_attempts=6)


def test_succeeded_puts_every_value_in_its_field() -> None:
    assert succeeded(DISTINCT, 30.0) == DISTINCT._replace(
        state=JobState.SUCCEEDED, last_error=None, finished_at=30.0
    )


texts = st.text(min_size=1, max_size=5)
times = st.floats(allow_nan=False, allow_infinity=False)
jobs = st.builds(
    Job,
    job_id=texts,
    dependency=texts,
    scope=texts,
    payload=st.none() | st.integers(),
    seq=st.integers(0, 1000),
    state=st.sampled_from(JobState),
    attempt=st.integers(0, 10),
    failures=st.integers(0, 10),
    eligible_at=times,
    admitted_at=st.none() | times,
    expires_at=st.none() | times,
    lease_deadline=st.none() | times,
    last_error=st.none() | texts,
    finished_at=st.none() | times,
    cost=st.floats(0, 1e6),
)


@given(
    job=jobs, now=times, expires_at=times, lease_deadline=times, max_attempts=st.none() | st.integers(1, 10)
)
def test_the_builders_agree_with_keyword_construction(
    job: Job, now: float, expires_at: float, lease_deadline: float, max_attempts: int | None
) -> None:
    admitted_job, admission = admitted(job, now, expires_at, lease_deadline, max_attempts)
    assert admitted_job == job._replace(
        state=JobState.ADMITTED,
        attempt=job.attempt + 1,
        admitted_at=now,
        expires_at=expires_at,
        lease_deadline=lease_deadline,
        finished_at=None,
    )
    assert admission == Admission.of(admitted_job, max_attempts)
    assert succeeded(job, now) == job._replace(state=JobState.SUCCEEDED, last_error=None, finished_at=now)
    fresh = first_attempt(
        job_id=job.job_id,
        dependency=job.dependency,
        scope=job.scope,
        payload=job.payload,
        seq=job.seq,
        now=now,
        cost=job.cost,
    )
    assert fresh == Job(
        job_id=job.job_id,
        dependency=job.dependency,
        scope=job.scope,
        payload=job.payload,
        seq=job.seq,
        eligible_at=now,
        cost=job.cost,
    )
