"""The domain policy as plain values the core understands.

`janus.config` validates the TOML file and builds these; the core never sees
TOML, pydantic or the environment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class RateCounting(StrEnum):
    """What a rate limit counts in its windows of T (the `counts` key of a limit)."""

    # At most COUNT calls *start* in any window of T, at the workers (the default): what the
    # dependency sees, for workers that follow the protocol (no start at or after `expires_at`).
    STARTS = "starts"
    # At most COUNT admissions in any window of T, on Janus's side: starts then hold only over
    # windows of T - admission_ttl. More throughput, for dependencies that do not count strictly.
    ADMISSIONS = "admissions"


@dataclass(frozen=True, kw_only=True, slots=True)
class RateLimit:
    """At most `count` starts (or admissions: `counts`) in any window of `window` seconds; with
    `units`, at most `count` units of cost (the jobs' `cost`) rather than `count` jobs."""

    count: int
    window: float
    counts: RateCounting = RateCounting.STARTS
    units: bool = False

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("rate limit count must be at least 1")
        if self.window <= 0:
            raise ValueError("rate limit window must be positive")

    def admission_window(self, admission_ttl: float) -> float:
        """The span over which Janus counts admissions so that the limit holds as `counts` says.

        `admissions`: the window itself. `starts`: the window plus `admission_ttl`; this is
        exactly enough, and no smaller span is:

        *Sufficient.* A protocol-following worker starts an admission made at `a` at some
        `s` in [a, a + ttl). Take any window [t, t + T) (or [t, t + T]) of start times. Every
        admission that starts in it has a > s - ttl >= t - ttl and a <= s <= t + T, so it
        lies in (t - ttl, t + T]. Let x be the earliest admission in that interval: all of
        them lie in [x, x + T + ttl), since x > t - ttl. At most COUNT admissions lie in any
        such half-open window of T + ttl (the sliding log holds that exactly), hence at most
        COUNT starts in [t, t + T].

        *Necessary.* Suppose COUNT + 1 admissions a_0 <= ... <= a_COUNT lie within a span
        shorter than T + ttl, i.e. a_COUNT < a_0 + T + ttl. Let t = max(a_0, a_COUNT - T) + e
        for an e > 0 small enough that t < a_0 + ttl (possible since a_COUNT - T < a_0 + ttl), and
        let each admission start at max(a_i, t): a delay in [0, ttl), since a_i >= a_0 >
        t - ttl. All COUNT + 1 starts lie in [t, t + T), since a_i <= a_COUNT < t + T. So
        workers that follow the protocol could make the dependency see COUNT + 1 calls in one
        window of T. Counting over T + ttl is therefore the least a scheduler can do that
        knows only admission times (it learns of starts only through results, later).
        """
        if self.counts is RateCounting.ADMISSIONS:
            return self.window
        return self.window + admission_ttl

    def __str__(self) -> str:
        return f"{self.count}{' units' if self.units else ''}/{self.window:g}s"


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """Per job: exponential backoff with jitter, and the failed attempts before a job is dead.

    Per dependency: the retry budget (`core/retry_budget.py`) and the cap on a worker's
    `retry_after` (`core/pause.py`).
    """

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    jitter: float = 0.5
    budget: float = 0.2  # share of admissions in budget_window that may be retries; 1.0: no budget
    budget_window: float = 10.0
    min_retries: int = 10  # retries always allowed per budget_window, whatever the share
    max_retry_after: float = 600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")
        if self.max_delay < self.base_delay:
            raise ValueError("max_delay must be at least base_delay")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")
        if not 0.0 < self.budget <= 1.0:
            raise ValueError("budget must be more than 0 and at most 1")
        if self.budget_window <= 0 or self.max_retry_after <= 0:
            raise ValueError("budget_window and max_retry_after must be positive")
        if self.min_retries < 1:
            # Without it, retries of a dependency that gets no new jobs would wait forever.
            raise ValueError("min_retries must be at least 1")


@dataclass(frozen=True, kw_only=True, slots=True)
class CircuitPolicy:
    """When a dependency's circuit opens, for how long, and how many probes test it (`core/circuit.py`)."""

    enabled: bool = True
    failure_threshold: float = 0.5  # opens when failures / outcomes in `window` reach this
    min_outcomes: int = 20
    window: float = 30.0
    open_for: float = 10.0  # doubles on each re-open from half-open, up to max_open_for
    max_open_for: float = 300.0
    half_open_probes: int = 3

    def __post_init__(self) -> None:
        if not 0.0 < self.failure_threshold <= 1.0:
            raise ValueError("failure_threshold must be more than 0 and at most 1")
        if self.min_outcomes < 1 or self.half_open_probes < 1:
            raise ValueError("min_outcomes and half_open_probes must be at least 1")
        if self.window <= 0 or self.open_for <= 0:
            raise ValueError("window and open_for must be positive")
        if self.max_open_for < self.open_for:
            raise ValueError("max_open_for must be at least open_for")


@dataclass(frozen=True, kw_only=True, slots=True)
class RecoveryPolicy:
    """After an outage, how the dependency is brought back (`core/recovery.py`).

    The defaults follow Envoy's slow start (10 % of the weight at first) and load balancers'
    slow start windows (30 s at least on AWS's): docs/decisions.md."""

    ramp: float = 30.0  # seconds; 0 turns the ramp off
    start: float = 0.1  # share of the reference rate the ramp starts at

    def __post_init__(self) -> None:
        if self.ramp < 0:
            raise ValueError("ramp must not be negative")
        if not 0.0 < self.start <= 1.0:
            raise ValueError("start must be more than 0 and at most 1")


RECOVERY_OFF = RecoveryPolicy(ramp=0.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class AdaptivePolicy:
    """`[dependencies.X.adaptive]`: limits found from the outcomes (`core/adaptive.py`).

    The rate adapts if `max_rate` is set, the concurrency if `max_concurrency` is; rates are
    in calls per second. Defaults and their sources: docs/decisions.md."""

    enabled: bool = True
    min_rate: float = 1.0
    max_rate: float | None = None
    min_concurrency: int = 1
    max_concurrency: int | None = None
    initial_rate: float | None = None  # None: 10/s within the bounds, doubled per clean round (slow start)
    initial_concurrency: int | None = None  # None: min_concurrency
    window: float = 1.0  # seconds: the shortest round
    decrease: float = 0.75  # the rate is multiplied by this after a throttled round
    increase: float = 0.05  # additive step: this share of the rate before the last decrease
    tolerance: float = 1.25  # latency up to tolerance x its floor lets the concurrency grow
    min_samples: int = 5  # durations a concurrency round needs
    floor_interval: float = 60.0  # seconds: the latency floor is taken again this often (0: never)

    def __post_init__(self) -> None:
        if self.max_rate is None and self.max_concurrency is None and self.enabled:
            raise ValueError("adaptive limits need max_rate or max_concurrency (or both)")
        if not 0 < self.min_rate <= (self.max_rate if self.max_rate is not None else math.inf):
            raise ValueError("min_rate must be positive and at most max_rate")
        if not 1 <= self.min_concurrency <= (self.max_concurrency or self.min_concurrency):
            raise ValueError("min_concurrency must be at least 1 and at most max_concurrency")
        if not 0.0 < self.decrease < 1.0:
            raise ValueError("decrease must be more than 0 and less than 1")
        if not 0.0 < self.increase <= 1.0:
            raise ValueError("increase must be more than 0 and at most 1")
        if not self.tolerance > 1.0:
            raise ValueError("tolerance must be more than 1")
        if self.floor_interval < 0:
            raise ValueError("floor_interval must be at least 0 (0: never)")
        if self.window <= 0 or self.min_samples < 1:
            raise ValueError("window must be positive and min_samples at least 1")

    @property
    def adapts_rate(self) -> bool:
        return self.enabled and self.max_rate is not None

    @property
    def adapts_concurrency(self) -> bool:
        return self.enabled and self.max_concurrency is not None


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


@dataclass(frozen=True, kw_only=True, slots=True)
class ShadowLimits:
    """Limits evaluated on every decision and never enforced (`[dependencies.X.shadow]`): Janus
    counts the admissions each would have held back, to try a tighter limit on live traffic."""

    rate_limits: tuple[RateLimit, ...] = ()
    concurrency: int | None = None
    scope_concurrency: int | None = None
    scope_rate_limits: tuple[RateLimit, ...] = ()

    def __post_init__(self) -> None:
        for cap in (self.concurrency, self.scope_concurrency):
            if cap is not None and cap < 1:
                raise ValueError("a shadow concurrency must be at least 1")


@dataclass(frozen=True, kw_only=True, slots=True)
class DependencyPolicy:
    """Everything the core needs to know about one dependency."""

    name: str
    rate_limits: tuple[RateLimit, ...] = ()  # counting jobs
    unit_limits: tuple[RateLimit, ...] = ()  # counting units of cost (core/units.py)
    max_cost: float | None = None  # a job declaring more is set aside at intake
    concurrency: int | None = None
    lease_timeout: float = 30.0
    admission_ttl: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    circuit: CircuitPolicy = field(default_factory=CircuitPolicy)
    fairness: FairnessPolicy = field(default_factory=FairnessPolicy)
    shadow: ShadowLimits | None = None
    recovery: RecoveryPolicy = field(default_factory=RecoveryPolicy)
    adaptive: AdaptivePolicy | None = None

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if any(limit.units for limit in self.rate_limits) or not all(u.units for u in self.unit_limits):
            raise ValueError("unit limits go in unit_limits, job counts in rate_limits")
        if self.admission_ttl <= 0:
            raise ValueError("admission_ttl must be positive")
        if self.lease_timeout <= self.admission_ttl:
            # A lease that could end while the admission is still takeable would let a
            # worker start a job whose slot Janus has already handed to another.
            raise ValueError("lease_timeout must be longer than admission_ttl")

    @property
    def longest_window(self) -> float:
        """The longest span admissions are counted over (`RateLimit.admission_window`), the
        dependency's or a scope's: how far back admission history matters."""
        limits = (*self.rate_limits, *self.unit_limits, *self.fairness.scope_rate_limits)
        if self.shadow is not None:
            limits += (*self.shadow.rate_limits, *self.shadow.scope_rate_limits)
        return max((limit.admission_window(self.admission_ttl) for limit in limits), default=0.0)


def default_admission_ttl(rate_limits: tuple[RateLimit, ...]) -> float:
    """A tenth of the shortest rate window (the dependency's or its scopes'), else 30 s.

    A limit that counts starts costs up to ttl / (T + ttl) of its rate when it binds, so a
    tenth of the window costs at most 9 %. And a limit that binds admits up to COUNT at
    once: a tenth of T lets workers start such a burst before it expires if they can start
    calls ten times as fast as the limit's average rate (docs/decisions.md, the figures).
    """
    if not rate_limits:
        return 30.0
    return min(limit.window for limit in rate_limits) / 10.0
