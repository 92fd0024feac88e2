"""A dependency-wide pause from a worker's `retry_after`.

When an API answers "429, Retry-After: 5", it is overloaded as a whole, not just for the
job that got the answer: Janus admits nothing of that dependency until then, and that
job's next attempt is not before it either. A value beyond the dependency's
`max_retry_after` is clamped, so a buggy worker cannot freeze a dependency for a year;
the decision says so and the shell logs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from janus.core.policy import RetryPolicy


@dataclass(frozen=True, kw_only=True, slots=True)
class Pause:
    until: float  # admit nothing of the dependency before this
    requested: float  # the worker's retry_after, seconds
    clamped: bool  # requested exceeded max_retry_after: paused for max_retry_after only


def pause_for(policy: RetryPolicy, retry_after: float | None, now: float) -> Pause | None:
    """The pause a failure's `retry_after` asks for, or None (absent, zero or not a number)."""
    if retry_after is None or not math.isfinite(retry_after) or retry_after <= 0:
        return None
    clamped = retry_after > policy.max_retry_after
    return Pause(until=now + min(retry_after, policy.max_retry_after), requested=retry_after, clamped=clamped)
