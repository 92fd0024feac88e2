"""The policy file's models: each dependency's tables (retry, circuit, fairness, ...) and the
whole file (JanusConfig), turned into the core's plain `DependencyPolicy` values."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from janus.adaptive_config import AdaptiveConfig
from janus.config_bounds import (
    DEPENDENCY_NAME,
    LARGEST_RESULT_BYTES,
    MAX_DEPENDENCIES,
    MAX_MESSAGE_SIZE_CEILING,
    MESSAGE_ENVELOPE_BYTES,
    Attempts,
    Concurrency,
    Count,
    Duration,
    JobLimitEntry,
    LeaseDuration,
    LimitEntry,
    Probes,
    RampDuration,
    RateLimitSpec,
    RetentionDuration,
    TtlDuration,
    WindowDuration,
    _Strict,
    format_duration,
)
from janus.core.policy import (
    CircuitPolicy,
    DependencyPolicy,
    FairnessPolicy,
    RateCounting,
    RateLimit,
    RecoveryPolicy,
    RetryPolicy,
    ShadowLimits,
    default_admission_ttl,
)
from janus.core.retention import BatchSizing, Retention, RetentionPolicy
from janus.scale_out_config import ScaleOutConfig
from janus.urls import check_port, split_urls

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/janus"


class RetryConfig(_Strict):
    max_attempts: Attempts = 5
    base_delay: Duration = 1.0
    max_delay: Duration = 60.0
    jitter: float = Field(default=0.5, ge=0.0, le=1.0, strict=True)
    budget: float = Field(default=0.2, gt=0.0, le=1.0, strict=True)
    budget_window: WindowDuration = 10.0
    min_retries: Count = 10
    max_retry_after: Duration = 600.0

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.max_delay < self.base_delay:
            raise ValueError("max_delay must be at least base_delay")
        return self

    def to_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            base_delay=self.base_delay,
            max_delay=self.max_delay,
            jitter=self.jitter,
            budget=self.budget,
            budget_window=self.budget_window,
            min_retries=self.min_retries,
            max_retry_after=self.max_retry_after,
        )


class CircuitConfig(_Strict):
    enabled: bool = Field(default=True, strict=True)
    failure_threshold: float = Field(default=0.5, gt=0.0, le=1.0, strict=True)
    min_outcomes: Count = 20
    window: WindowDuration = 30.0
    open_for: Duration = 10.0
    max_open_for: Duration = 300.0
    half_open_probes: Probes = 3

    @model_validator(mode="after")
    def _ordered(self) -> CircuitConfig:
        if self.max_open_for < self.open_for:
            raise ValueError("max_open_for must be at least open_for")
        return self

    def to_policy(self) -> CircuitPolicy:
        return CircuitPolicy(**self.model_dump())


class RecoveryConfig(_Strict):
    ramp: RampDuration = 30.0
    start: float = Field(default=0.1, gt=0.0, le=1.0, strict=True)

    def to_policy(self) -> RecoveryPolicy:
        return RecoveryPolicy(ramp=self.ramp, start=self.start)


def _weight(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("a weight is a positive number")
    weight = float(value)
    if not math.isfinite(weight) or weight <= 0:
        raise ValueError(f"a weight must be positive and finite, got {value!r}")
    if not 1e-3 <= weight <= 1e6:
        # Strides are integers of 2**40 / weight: this range keeps them exact enough.
        raise ValueError(f"a weight must be between 0.001 and 1000000, got {value!r}")
    return weight


Weight = Annotated[float, BeforeValidator(_weight)]


class FairnessConfig(_Strict):
    default_weight: Weight = 1.0
    weights: dict[str, Weight] = Field(default_factory=dict)
    scope_concurrency: Concurrency | None = None
    scope_rate_limits: list[JobLimitEntry] = Field(default_factory=list)

    def to_policy(self) -> FairnessPolicy:
        return FairnessPolicy(
            default_weight=self.default_weight,
            weights=dict(self.weights),
            scope_concurrency=self.scope_concurrency,
            scope_rate_limits=tuple(self.scope_rate_limits),
        )


class ShadowConfig(_Strict):
    """Limits counted on every decision, never enforced: what they would have held back."""

    rate_limits: list[JobLimitEntry] = Field(default_factory=list)
    concurrency: int | None = Field(default=None, ge=1, strict=True)
    scope_concurrency: int | None = Field(default=None, ge=1, strict=True)
    scope_rate_limits: list[JobLimitEntry] = Field(default_factory=list)

    def to_policy(self) -> ShadowLimits:
        return ShadowLimits(
            rate_limits=tuple(self.rate_limits),
            concurrency=self.concurrency,
            scope_concurrency=self.scope_concurrency,
            scope_rate_limits=tuple(self.scope_rate_limits),
        )


class DependencyRetentionConfig(_Strict):
    """`[dependencies.X.retention]`: any of the three periods, the rest from `[retention]`."""

    succeeded: RetentionDuration | None = None
    dead: RetentionDuration | None = None
    dedup_window: RetentionDuration | None = None


class RetentionConfig(_Strict):
    """`[retention]`: how long finished jobs stay in PostgreSQL (docs/decisions.md: the defaults)."""

    succeeded: RetentionDuration = 86400.0
    dead: RetentionDuration = 14 * 86400.0
    dedup_window: RetentionDuration = 86400.0
    prune_every: Duration = 10.0  # how often the leader looks for rows past their retention
    batch_budget: Duration = 0.05  # a pruning transaction's target duration (batches adapt to it)

    def policy(self, override: DependencyRetentionConfig | None = None) -> RetentionPolicy:
        given = override.model_dump(exclude_none=True) if override is not None else {}
        return RetentionPolicy(
            succeeded=given.get("succeeded", self.succeeded),
            dead=given.get("dead", self.dead),
            dedup_window=given.get("dedup_window", self.dedup_window),
        )

    def sizing(self) -> BatchSizing:
        return BatchSizing(budget=self.batch_budget)


Outcome = Literal["succeeded", "dead"]
OUTCOMES: tuple[Outcome, ...] = ("succeeded", "dead")


class DependencyConfig(_Strict):
    rate_limits: list[LimitEntry] = Field(default_factory=list)
    max_cost: float | None = Field(default=None, ge=0, allow_inf_nan=False)  # a job's `cost`, at most
    concurrency: Concurrency | None = None
    lease_timeout: LeaseDuration = 300.0
    admission_ttl: TtlDuration | None = None
    retry: RetryConfig = Field(default_factory=RetryConfig)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    # Terminal outcomes published to janus.outcomes. Each costs Janus a publish (a good part of
    # its CPU per job): a dependency nobody subscribes to for successes can keep only "dead".
    outcomes: list[Outcome] = Field(default_factory=lambda: list(OUTCOMES))
    shadow: ShadowConfig | None = None
    retention: DependencyRetentionConfig | None = None  # overrides [retention] for this dependency
    adaptive: AdaptiveConfig | None = None  # limits found from the outcomes (adaptive_config.py)

    @model_validator(mode="after")
    def _lease_covers_ttl(self) -> DependencyConfig:
        if self.admission_ttl is not None and self.lease_timeout <= self.admission_ttl:
            raise ValueError(
                f"lease_timeout ({self.lease_timeout:g}s) must be longer than admission_ttl "
                f"({self.admission_ttl:g}s): a worker may start a job until it expires"
            )
        return self

    def to_policy(self, name: str) -> DependencyPolicy:
        limits = tuple(self.rate_limits)
        ttl = self.admission_ttl
        if ttl is None:
            every = (*limits, *self.fairness.scope_rate_limits)  # a scope's limits pay the TTL too
            ttl = min(default_admission_ttl(every), self.lease_timeout / 2)
        return DependencyPolicy(
            name=name,
            rate_limits=tuple(limit for limit in limits if not limit.units),
            unit_limits=tuple(limit for limit in limits if limit.units),
            max_cost=self.max_cost,
            concurrency=self.concurrency,
            lease_timeout=self.lease_timeout,
            admission_ttl=ttl,
            retry=self.retry.to_policy(),
            circuit=self.circuit.to_policy(),
            fairness=self.fairness.to_policy(),
            shadow=self.shadow.to_policy() if self.shadow is not None else None,
            recovery=self.recovery.to_policy(),
            adaptive=self.adaptive.to_policy() if self.adaptive is not None else None,
        )


class JanusConfig(_Strict):
    amqp_url: str = DEFAULT_AMQP_URL
    database_url: str = DEFAULT_DATABASE_URL
    max_payload_bytes: int = Field(default=64 * 1024, ge=1, le=MAX_MESSAGE_SIZE_CEILING, strict=True)
    # The largest message, in bytes, the broker takes (its own `max_message_size`, set to the
    # same: deploy/rabbitmq/rabbitmq.conf). Janus's prefetch bounds count x this in bytes.
    max_message_size: int = Field(default=128 * 1024, le=MAX_MESSAGE_SIZE_CEILING, strict=True)
    # Per results queue: bad results set aside in any window; beyond it the queue waits, so a
    # flooding worker cannot take the leader's CPU from other dependencies (janus/core/flood.py).
    bad_results_limit: RateLimitSpec = RateLimit(count=200, window=1.0)
    # The type of every queue Janus declares: "quorum" (replicated, for a cluster) or "classic"
    # (the default: what existing deployments have; docs/decisions.md). Read at start only.
    queue_type: Literal["quorum", "classic"] = "classic"
    dependencies: dict[str, DependencyConfig] = Field(min_length=1)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    scale_out: ScaleOutConfig = Field(default_factory=ScaleOutConfig)  # a process key, not policy

    @field_validator("dependencies", mode="before")
    @classmethod
    def _how_many(cls, value: object) -> object:
        if isinstance(value, dict) and len(value) > MAX_DEPENDENCIES:
            raise ValueError(
                f"{len(value):,} dependencies: at most {MAX_DEPENDENCIES:,} (each takes a channel of "
                "Janus's broker connection, and RabbitMQ allows 2,047 channels per connection)"
            )
        return value

    @field_validator("amqp_url", mode="before")
    @classmethod
    def _nodes(cls, value: object) -> object:  # a cluster's nodes: a list, or one string of URLs
        return ",".join(map(str, value)) if isinstance(value, list) else value

    @field_validator("amqp_url", "database_url")
    @classmethod
    def _port(cls, value: str, info: ValidationInfo) -> str:
        for url in split_urls(value) if info.field_name == "amqp_url" else [value]:
            check_port(url)  # a port like "abc" would otherwise fail only when connecting
        return value

    @field_validator("max_message_size")
    @classmethod
    def _room_for_every_valid_message(cls, value: int, info: ValidationInfo) -> int:
        # A valid intake message (its payload at the cap, and its envelope) and a valid result
        # must fit, or the broker would refuse what Janus accepts.
        payload = info.data.get("max_payload_bytes", 0)
        least = max(payload + MESSAGE_ENVELOPE_BYTES, LARGEST_RESULT_BYTES)
        if value < least:
            raise ValueError(
                f"must be at least {least} bytes: max_payload_bytes + {MESSAGE_ENVELOPE_BYTES} (the envelope), "
                f"and at least {LARGEST_RESULT_BYTES} (the largest result)"
            )
        return value

    @field_validator("dependencies")
    @classmethod
    def _names(cls, value: dict[str, DependencyConfig]) -> dict[str, DependencyConfig]:
        for name in value:
            if not DEPENDENCY_NAME.fullmatch(name):
                raise ValueError(
                    f"invalid dependency name {name!r}: 1-100 characters of letters, digits, '_', '.', '-', "
                    "starting with a letter or digit"
                )
        return value

    @model_validator(mode="after")
    def _dedup_within_retention(self) -> JanusConfig:
        # The stored job is the idempotency record: a window longer than what is kept would
        # promise duplicates that pruning has already forgotten.
        where = [("retention", self.retention.policy())]
        where += [
            (f"dependencies.{name}.retention", self.retention.policy(dep.retention))
            for name, dep in self.dependencies.items()
            if dep.retention is not None
        ]
        for location, policy in where:
            kept = min(policy.succeeded, policy.dead)
            if policy.dedup_window > kept:
                raise ValueError(
                    f"{location}: dedup_window ({format_duration(policy.dedup_window)}) must not exceed "
                    f"the retention of succeeded ({format_duration(policy.succeeded)}) or dead "
                    f"({format_duration(policy.dead)}) jobs: a job_id "
                    "is recognised as a duplicate only while its job is stored"
                )
        return self

    def retention_policies(self) -> Retention:
        """The default retention, and each dependency's where it overrides it."""
        return Retention(
            default=self.retention.policy(),
            overrides={
                name: self.retention.policy(dep.retention)
                for name, dep in self.dependencies.items()
                if dep.retention is not None
            },
        )

    def policies(self) -> list[DependencyPolicy]:
        return [dep.to_policy(name) for name, dep in self.dependencies.items()]

    def published_outcomes(self) -> dict[str, frozenset[str]]:
        """Per dependency, the terminal outcomes (job states) published to janus.outcomes."""
        return {name: frozenset(dep.outcomes) for name, dep in self.dependencies.items()}


def describe_rate_limits(policy: DependencyPolicy) -> list[str]:
    """What each rate limit of a dependency promises, and the span Janus counts its admissions over
    (`janus check-config` prints it)."""
    ttl = policy.admission_ttl
    lines = []
    for kind, limits in (("rate", policy.rate_limits), ("scope rate", policy.fairness.scope_rate_limits)):
        for limit in limits:
            span = limit.admission_window(ttl)
            per = "per scope " if kind == "scope rate" else ""
            if limit.counts is RateCounting.STARTS:
                meaning = f"at most {limit.count} calls start {per}in any {limit.window:g}s"
            else:
                meaning = (
                    f"at most {limit.count} admissions {per}in any {limit.window:g}s "
                    f"(starts: in any {limit.window - ttl:g}s)"
                )
            lines.append(
                f"{kind} {limit.count}/{limit.window:g}s counts {limit.counts.value}: {meaning}; "
                f"admissions counted over {span:g}s"
            )
    return lines
