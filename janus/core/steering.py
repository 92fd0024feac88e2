"""An operator's hand on a dependency, on top of its policy: a pause, and a temporary override.

`janus pause` stops a dependency's admissions (until `janus resume`, or for a while); held
admissions finish normally and waiting jobs lose no attempt. `janus override` replaces the
dependency's concurrency and/or rate limits for a while (an incident lever), and ends by itself.
Both are values here; the lane applies them (`Lane.steer`) and lifts them when their time
comes, on the core's clock, so that they end on time on whichever leader runs by then.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from janus.core.policy import DependencyPolicy, RateLimit


@dataclass(frozen=True, kw_only=True, slots=True)
class OperatorPause:
    """Nothing of the dependency is admitted until `until` (None: until resumed)."""

    until: float | None
    by: str  # who, and why: shown by `janus why` and in the scopes


@dataclass(frozen=True, kw_only=True, slots=True)
class Override:
    """The dependency's concurrency and/or rate limits replaced until `until`."""

    until: float
    by: str
    concurrency: int | None = None  # None: the policy's
    rate_limits: tuple[RateLimit, ...] | None = None  # None: the policy's

    def __post_init__(self) -> None:
        if self.concurrency is None and self.rate_limits is None:
            raise ValueError("an override sets concurrency, rate limits, or both")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("an override's concurrency must be at least 1")

    def applied_to(self, policy: DependencyPolicy) -> DependencyPolicy:
        """The policy in force while the override lasts."""
        return dataclasses.replace(
            policy,
            concurrency=self.concurrency if self.concurrency is not None else policy.concurrency,
            rate_limits=self.rate_limits if self.rate_limits is not None else policy.rate_limits,
        )

    def describe(self) -> str:
        parts = []
        if self.concurrency is not None:
            parts.append(f"concurrency {self.concurrency}")
        if self.rate_limits is not None:
            parts.append("rate " + (", ".join(map(str, self.rate_limits)) or "unlimited"))
        return ", ".join(parts)


@dataclass(frozen=True, kw_only=True, slots=True)
class Steering:
    """One dependency's pause and override (either may be absent), as the store keeps them."""

    dependency: str
    pause: OperatorPause | None = None
    override: Override | None = None

    def in_force(self, now: float) -> Steering:
        """Without what has ended by `now`."""
        pause, override = self.pause, self.override
        if pause is not None and pause.until is not None and pause.until <= now:
            pause = None
        if override is not None and override.until <= now:
            override = None
        return Steering(dependency=self.dependency, pause=pause, override=override)
