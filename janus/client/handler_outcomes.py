"""What a handler returns or raises to say more than success or failure: what the call cost
(`Cost`, and `cost=` on the exceptions), that the dependency asked to back off (`RetryAfter`),
refused the call for load (`Throttled`), or failed a call it still charged (`Failed`).
The worker turns each into the result's fields (docs/protocol.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Cost:
    """Return from a handler what the call really cost, in its dependency's units (tokens, credits):
    `return Cost(response.usage.total_tokens)`. The result reports it, and Janus settles it in
    place of the job's estimate (docs/protocol.md, Costed jobs). Any other return reports none."""

    units: float


class RetryAfter(Exception):
    """Raise from a handler when the dependency asked to back off (e.g. HTTP 429 Retry-After):
    the attempt failed, and Janus admits nothing of the dependency for `seconds`. The result
    says `throttled` too (docs/protocol.md). `cost`: what the failed call cost anyway, if the
    dependency charged it."""

    def __init__(self, seconds: float, message: str = "", *, cost: float | None = None) -> None:
        super().__init__(message or f"retry after {seconds:g}s")
        self.seconds = seconds
        self.cost = cost


class Failed(Exception):
    """Raise from a handler for a failed attempt that still cost `cost` units (any other exception
    reports a failure with no cost: the estimate stays charged)."""

    def __init__(self, message: str, *, cost: float | None = None) -> None:
        super().__init__(message)
        self.cost = cost


class Throttled(Exception):
    """Raise from a handler when the dependency refused the call for load (HTTP 429 or 503),
    with its Retry-After if it gave one: the attempt failed, and the result says `throttled`,
    which lowers the dependency's adaptive rate if it has one (docs/protocol.md). With
    `retry_after`, Janus pauses the dependency as for RetryAfter."""

    def __init__(
        self, retry_after: float | None = None, message: str = "", *, cost: float | None = None
    ) -> None:
        super().__init__(message or "throttled" + (f", retry after {retry_after:g}s" if retry_after else ""))
        self.retry_after = retry_after
        self.cost = cost
