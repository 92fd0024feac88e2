"""Why a result that changed nothing changed nothing, told apart with what the store knows.

The core judges a result from memory alone: a job it does not hold is `unknown_job`, an
attempt that is not the job's current admission `stale_attempt`. Both are set aside so that
a misbehaving worker shows. But a worker that follows the protocol also publishes results
that change nothing: it publishes again when a confirm is lost with its connection, and a
handler cut off at the end of its lease reports a failure Janus may already have counted.
The store knows a finished job's last attempt and outcome and every failed attempt's error,
so the shell looks up the rare results the core calls unknown or stale, and `explain` names
them precisely (docs/protocol.md, "Results that change nothing").
"""

from __future__ import annotations

from dataclasses import dataclass

from janus.core.jobs import JobState

DUPLICATE_RESULT = "duplicate_result"  # the same result again: the worker published it twice
LEASE_EXPIRED = "lease_expired"  # for an attempt whose lease ran out before the result came
WRONG_DEPENDENCY = "wrong_dependency"  # a job of another dependency than the result's queue

# The error the core records for an attempt whose lease ran out (`lease_timeout_error`), and
# for a failure reported without one: what a repeat of a result must match.
LEASE_TIMEOUT_PREFIX = "lease timed out after "
ERROR_OF_A_BARE_FAILURE = "failed"


def lease_timeout_error(lease_timeout: float) -> str:
    return f"{LEASE_TIMEOUT_PREFIX}{lease_timeout:g}s"


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredAttempt:
    """What the store holds of a job a result names, and of the attempt the result reports."""

    dependency: str
    state: JobState
    last_attempt: int  # the job's latest admission
    error: str | None  # the error recorded for the reported attempt, if it failed


def explain(
    verdict: str,
    *,
    source: str,
    attempt: int,
    success: bool,
    error: str | None,
    stored: StoredAttempt | None,
) -> str:
    """The reason to set a result aside with, given the core's `verdict` (unknown_job or
    stale_attempt), the dependency whose results queue it came through, and the store's view."""
    if stored is None:
        return verdict  # the store never had the job either
    if stored.dependency != source:
        return WRONG_DEPENDENCY  # a worker of `source` cannot speak for this job, finished or not
    if success:
        if stored.state is JobState.SUCCEEDED and stored.last_attempt == attempt:
            return DUPLICATE_RESULT
    elif stored.error is not None and stored.error == (error or ERROR_OF_A_BARE_FAILURE):
        return DUPLICATE_RESULT
    if stored.error is not None and stored.error.startswith(LEASE_TIMEOUT_PREFIX):
        return LEASE_EXPIRED
    return verdict
