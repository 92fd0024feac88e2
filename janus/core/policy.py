"""The domain policy as plain values the core understands.

`janus.config` validates the TOML file and builds these; the core never sees
TOML, pydantic or the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
class DependencyPolicy:
    """Everything the core needs to know about one dependency."""

    name: str
    rate_limits: tuple[RateLimit, ...] = ()
    concurrency: int | None = None
    lease_timeout: float = 30.0
    admission_ttl: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

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
        return max((limit.window for limit in self.rate_limits), default=0.0)


def default_admission_ttl(rate_limits: tuple[RateLimit, ...]) -> float:
    """A tenth of the shortest rate window, else 30 s (docs/protocol.md explains why)."""
    if not rate_limits:
        return 30.0
    return min(limit.window for limit in rate_limits) / 10.0
