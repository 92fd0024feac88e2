"""Results that change nothing, told apart: a repeat of an applied result is not a stale attempt."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from janus.core.jobs import JobState
from janus.core.policy import DependencyPolicy
from janus.core.repeats import (
    DUPLICATE_RESULT,
    ERROR_OF_A_BARE_FAILURE,
    LEASE_EXPIRED,
    LEASE_TIMEOUT_PREFIX,
    WRONG_DEPENDENCY,
    StoredAttempt,
    explain,
    lease_timeout_error,
)
from janus.core.scheduler import Scheduler, Verdict
from janus.protocol import ResultMessage
from janus.service.unapplied import Unapplied

SUCCEEDED_AT_3 = StoredAttempt(dependency="api", state=JobState.SUCCEEDED, last_attempt=3, error=None)
ADMITTED_AGAIN = StoredAttempt(dependency="api", state=JobState.ADMITTED, last_attempt=2, error=None)


def failed(attempt_error: str, state: JobState = JobState.WAITING, last: int = 2) -> StoredAttempt:
    return StoredAttempt(dependency="api", state=state, last_attempt=last, error=attempt_error)


CASES: list[tuple[str, str, int, bool, str | None, StoredAttempt | None, str]] = [
    # (core verdict, source queue, attempt, success, error, what the store holds, reason)
    ("unknown_job", "api", 1, True, None, None, "unknown_job"),  # the store never had it either
    ("unknown_job", "api", 3, True, None, SUCCEEDED_AT_3, DUPLICATE_RESULT),  # its success again
    ("unknown_job", "api", 2, True, None, SUCCEEDED_AT_3, "unknown_job"),  # a success of an older attempt
    ("unknown_job", "mail", 3, True, None, SUCCEEDED_AT_3, WRONG_DEPENDENCY),  # finished, and not mail's
    ("stale_attempt", "api", 2, False, "503", failed("503"), DUPLICATE_RESULT),  # its failure again
    ("stale_attempt", "api", 2, False, "502", failed("503"), "stale_attempt"),  # another failure: not a repeat
    ("stale_attempt", "api", 2, True, None, failed("503"), "stale_attempt"),  # a success for a failed attempt
    ("stale_attempt", "api", 2, False, None, failed(ERROR_OF_A_BARE_FAILURE), DUPLICATE_RESULT),  # no error
    ("stale_attempt", "api", 2, False, "", failed(ERROR_OF_A_BARE_FAILURE), DUPLICATE_RESULT),  # empty error
    ("unknown_job", "api", 2, False, "503", failed("503", JobState.DEAD), DUPLICATE_RESULT),  # the last failure
    ("stale_attempt", "api", 2, False, "cut off", failed(lease_timeout_error(5)), LEASE_EXPIRED),  # after lease
    ("stale_attempt", "api", 2, True, None, failed(lease_timeout_error(5), last=3), LEASE_EXPIRED),  # too late
    ("stale_attempt", "api", 1, True, None, ADMITTED_AGAIN, "stale_attempt"),  # its admission came back unused
]  # fmt: skip


@pytest.mark.parametrize(("verdict", "source", "attempt", "success", "error", "stored", "reason"), CASES)
def test_explain(
    verdict: str,
    source: str,
    attempt: int,
    success: bool,
    error: str | None,
    stored: StoredAttempt | None,
    reason: str,
) -> None:
    got = explain(verdict, source=source, attempt=attempt, success=success, error=error, stored=stored)
    assert got == reason


def test_the_core_records_the_errors_explain_matches() -> None:
    """The strings a repeat is matched against are the ones the core stores."""
    policy = DependencyPolicy(name="api", lease_timeout=5.0, admission_ttl=1.0)
    core = Scheduler([policy], random.Random(0))
    for job_id in ("bare", "lapsed"):
        core.submit(job_id=job_id, dependency="api", scope="s", payload=None, now=0.0)
    core.admit(0.0)
    bare = core.on_result(job_id="bare", attempt=1, success=False, error=None, retry_after=None, now=1.0)
    assert bare.job is not None
    assert bare.job.last_error == ERROR_OF_A_BARE_FAILURE
    (lapsed,) = core.expire_leases(5.0)
    assert lapsed.job is not None
    assert lapsed.job.last_error == lease_timeout_error(5.0)
    assert lapsed.job.last_error.startswith(LEASE_TIMEOUT_PREFIX)


class FakeStore:
    def __init__(self, rows: dict[tuple[str, int], StoredAttempt]) -> None:
        self.rows = rows
        self.asked: list[list[tuple[str, int]]] = []

    async def reported_attempts(self, reported: list[tuple[str, int]]) -> list[StoredAttempt | None]:
        self.asked.append(reported)
        return [self.rows.get(key) for key in reported]


def result(job_id: str, attempt: int, outcome: str = "success", error: str | None = None) -> ResultMessage:
    fields: dict[str, Any] = {"job_id": job_id, "attempt": attempt, "outcome": outcome, "error": error}
    return ResultMessage.model_validate(fields)


def test_a_repeat_within_one_tick_needs_no_store_and_the_rest_take_one_lookup() -> None:
    unapplied = Unapplied()
    deliveries: list[Any] = [object() for _ in range(4)]
    unapplied.note(deliveries[0], "api", result("a", 1), Verdict.SUCCEEDED)  # applied
    unapplied.note(deliveries[1], "api", result("a", 1), Verdict.UNKNOWN_JOB)  # the same again, same tick
    unapplied.note(deliveries[2], "api", result("b", 2, "failure", "503"), Verdict.STALE_ATTEMPT)
    unapplied.note(deliveries[3], "api", result("ghost", 1), Verdict.UNKNOWN_JOB)
    store = FakeStore({("b", 2): failed("503", last=3)})
    explained = asyncio.run(unapplied.explain(store))
    assert [(d, reason) for d, reason, _ in explained] == [
        (deliveries[1], DUPLICATE_RESULT),
        (deliveries[2], DUPLICATE_RESULT),
        (deliveries[3], "unknown_job"),
    ]
    assert store.asked == [[("b", 2), ("ghost", 1)]]


def test_no_lookup_when_every_result_changed_something() -> None:
    unapplied = Unapplied()
    delivery: Any = object()
    unapplied.note(delivery, "api", result("a", 1), Verdict.SUCCEEDED)
    store = FakeStore({})
    assert asyncio.run(unapplied.explain(store)) == []
    assert store.asked == []
