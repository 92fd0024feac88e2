"""The domain policy as plain values the core understands.

`janus.config` validates the TOML file and builds these; the core never sees
TOML, pydantic or the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, kw_only=True, slots=True)
class RateLimit:
    """At most `count` admissions in any window of `window` seconds (sliding, exact)."""

    count: int
    window: float

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("rate limit count must be at least 1")
        if self.window <= 0:
            raise ValueError("rate limit window must be positive")

    def __str__(self) -> str:
        return f"{self.count}/{self.window:g}s"


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, and the number of failed attempts before a job is dead."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")
        if self.max_delay < self.base_delay:
            raise ValueError("max_delay must be at least base_delay")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")


@dataclass(frozen=True, kw_only=True, slots=True)
class FairnessPolicy:
    """How one dependency's admissions are shared between its scopes (tenants)."""

    default_weight: float = 1.0
    weights: Mapping[str, float] = field(default_factory=dict)  # scopes whose weight is not the default
    scope_concurrency: int | None = None  # at most this many held by one scope
    scope_rate_limits: tuple[RateLimit, ...] = ()  # per scope; all must hold

    def __post_init__(self) -> None:
        if not self.default_weight > 0:
            raise ValueError("default_weight must be positive")
        for scope, weight in self.weights.items():
            if not weight > 0:
                raise ValueError(f"the weight of scope {scope!r} must be positive")
        if self.scope_concurrency is not None and self.scope_concurrency < 1:
            raise ValueError("scope_concurrency must be at least 1")
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))

    def weight(self, scope: str) -> float:
        return self.weights.get(scope, self.default_weight)

    @property
    def longest_scope_window(self) -> float:
        return max((limit.window for limit in self.scope_rate_limits), default=0.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class DependencyPolicy:
    """Everything the core needs to know about one dependency."""

    name: str
    rate_limits: tuple[RateLimit, ...] = ()
    concurrency: int | None = None
    lease_timeout: float = 30.0
    admission_ttl: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    fairness: FairnessPolicy = field(default_factory=FairnessPolicy)

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.admission_ttl <= 0:
            raise ValueError("admission_ttl must be positive")
        if self.lease_timeout <= self.admission_ttl:
            # A lease that could end while the admission is still takeable would let a
            # worker start a job whose slot Janus has already handed to another.
            raise ValueError("lease_timeout must be longer than admission_ttl")

    @property
    def longest_window(self) -> float:
        """The longest rate window, the dependency's or a scope's: how far back history matters."""
        own = max((limit.window for limit in self.rate_limits), default=0.0)
        return max(own, self.fairness.longest_scope_window)


def default_admission_ttl(rate_limits: tuple[RateLimit, ...]) -> float:
    """A tenth of the shortest rate window, else 30 s (docs/protocol.md explains why)."""
    if not rate_limits:
        return 30.0
    return min(limit.window for limit in rate_limits) / 10.0
