"""The results of one tick that changed nothing, and the reason each is set aside with.

The core calls such a result `unknown_job` or `stale_attempt` from memory; `explain` asks
the store about the jobs of those results, in one query, before the tick commits, and
`core/repeats.py` names each: a repeat of a result already applied (`duplicate_result`), one
for an attempt whose lease had run out (`lease_expired`), one for a job of another
dependency (`wrong_dependency`), or the core's verdict. A repeat of a result applied earlier
in the same tick is known without the store (it does not hold that tick yet).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from janus.broker.consumer import Delivery
from janus.core.decisions import Verdict
from janus.core.repeats import DUPLICATE_RESULT, StoredAttempt, explain
from janus.protocol import ResultMessage

_NO_EFFECT = frozenset({Verdict.UNKNOWN_JOB, Verdict.STALE_ATTEMPT})
_APPLIED = frozenset({Verdict.SUCCEEDED, Verdict.RETRY_SCHEDULED, Verdict.DEAD})


class AttemptLookup(Protocol):
    async def reported_attempts(self, reported: list[tuple[str, int]]) -> list[StoredAttempt | None]: ...


def _key(source: str, result: ResultMessage) -> tuple[str, str, int, str, str | None]:
    return (source, result.job_id, result.attempt, result.outcome, result.error)


@dataclass
class Unapplied:
    """Collects, per tick, the results applied and those that changed nothing."""

    _applied: set[tuple[str, str, int, str, str | None]] = field(default_factory=set)
    _unapplied: list[tuple[Delivery, str, ResultMessage, Verdict]] = field(default_factory=list)

    def note(self, delivery: Delivery, source: str, result: ResultMessage, verdict: Verdict) -> None:
        """What the core did with a result that came through `source`'s results queue."""
        if verdict in _APPLIED:
            self._applied.add(_key(source, result))
        elif verdict in _NO_EFFECT:
            self._unapplied.append((delivery, source, result, verdict))

    async def explain(self, store: AttemptLookup) -> list[tuple[Delivery, str, str]]:
        """(delivery, reason, detail) of every result that changed nothing."""
        if not self._unapplied:
            return []
        # Repeats of a result applied in this very tick are known at once; the rest ask the store.
        asked = [i for i, item in enumerate(self._unapplied) if _key(item[1], item[2]) not in self._applied]
        found = await store.reported_attempts(
            [(self._unapplied[i][2].job_id, self._unapplied[i][2].attempt) for i in asked]
        )
        stored: dict[int, StoredAttempt | None] = dict(zip(asked, found, strict=True))
        explained = []
        for index, (delivery, source, result, verdict) in enumerate(self._unapplied):
            detail = f"job {result.job_id!r} attempt {result.attempt} ({result.outcome})"
            if index not in stored:
                explained.append((delivery, DUPLICATE_RESULT, f"{detail}: applied earlier in the same tick"))
                continue
            reason = explain(
                verdict.value,
                source=source,
                attempt=result.attempt,
                success=result.outcome == "success",
                error=result.error,
                stored=stored[index],
            )
            explained.append((delivery, reason, detail))
        return explained
