"""Configuration: process settings from the environment, domain policy from a TOML file.

The file is validated strictly (unknown keys are errors, so typos cannot pass
silently) and turned into the core's plain `DependencyPolicy` values. Every
error names the key and the problem.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from janus.adaptive_config import AdaptiveConfig
from janus.config_limits import _DURATION
from janus.config_limits import parse_duration as parse_duration
from janus.config_limits import parse_limit_entry as parse_limit_entry
from janus.config_limits import parse_rate_limit as parse_rate_limit
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
from janus.errors import ConfigError
from janus.scale_out_config import ScaleOutConfig
from janus.urls import check_port, split_urls

# janus.protocol's ENVELOPE_BYTES and MAX_RESULT_BYTES (the config may not import the protocol;
# a unit test keeps them equal): what max_message_size must leave room for.
MESSAGE_ENVELOPE_BYTES = 8 * 1024
LARGEST_RESULT_BYTES = 8 * 1024 + 6 * 2000
# RabbitMQ refuses a max_message_size above 512 MiB.
MAX_MESSAGE_SIZE_CEILING = 512 * 1024 * 1024

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/janus"

DEPENDENCY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")


# Bounds of what a policy may say (docs/configuration.md#bounds): beyond them a value is a
# typo or cannot work, and check-config says so instead of a leader that never admits.
SECOND, DAY = 1.0, 86400.0
MAX_DEPENDENCIES = 2000  # one channel each on one connection; RabbitMQ allows 2,047 (channel_max)
MAX_CONCURRENCY = 1_000_000  # slots held at once, per dependency or per scope
MAX_RATE_COUNT = 10_000_000  # admissions a rate window holds (each one kept in memory)
MAX_UNIT_COUNT = 10**12  # units of a unit limit (counted to a thousandth in integers)
MAX_COUNT = 1_000_000  # min_retries, min_outcomes
MAX_ATTEMPTS = 1000
MAX_PROBES = 10_000
MIN_DURATION = 0.001  # the smallest unit ("1ms"); the clock and the tick are no finer
MAX_WINDOW = 31 * DAY  # a rate window: a monthly quota, and the history a rebuild reads
MAX_DELAY = 7 * DAY  # a retry delay, a lease, a circuit's opening: a week at most
MAX_TTL = DAY
MAX_RETENTION = 366 * DAY


def _between(low: float, high: float) -> AfterValidator:
    def check(seconds: float) -> float:
        if not low <= seconds <= high:
            raise ValueError(
                f"must be between {format_duration(low)} and {format_duration(high)}, got {format_duration(seconds)}"
            )
        return seconds

    return AfterValidator(check)


def format_duration(value: float) -> str:
    """A duration as the file would say it: "1ms", "2s", "7d"."""
    if value == 0:
        return "0s"
    for unit, size in (("d", DAY), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if value >= size and (value / size).is_integer():
            return f"{value / size:g}{unit}"
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


def _zero_or_duration(value: object) -> float:
    """A duration, or zero ("0s", "0", 0): what turns a feature off."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0.0
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is not None and match.group(1) is not None and float(match.group(1)) == 0:
        return 0.0
    return parse_duration(value)


def _limit_bounds(limit: RateLimit) -> RateLimit:
    text = f"{limit.count}{' units' if limit.units else ''}/{format_duration(limit.window)}"
    most = MAX_UNIT_COUNT if limit.units else MAX_RATE_COUNT  # a unit limit keeps one entry per job
    if limit.count > most:
        raise ValueError(f"invalid rate limit '{text}': COUNT must be at most {most:,}")
    if not MIN_DURATION <= limit.window <= MAX_WINDOW:
        raise ValueError(
            f"invalid rate limit '{text}': the window must be between {format_duration(MIN_DURATION)} "
            f"and {format_duration(MAX_WINDOW)}"
        )
    return limit


# Durations: a number of seconds or a string like "2s", each kind with its bounds.
Duration = Annotated[float, BeforeValidator(parse_duration), _between(MIN_DURATION, MAX_DELAY)]
WindowDuration = Annotated[float, BeforeValidator(parse_duration), _between(MIN_DURATION, MAX_WINDOW)]
# The recovery ramp: 0 turns it off, so zero is a duration here ("0s", "0" or 0).
RampDuration = Annotated[float, BeforeValidator(_zero_or_duration), _between(0.0, DAY)]
# A worker must get the job, run it and report within the lease: under a second cannot work.
LeaseDuration = Annotated[float, BeforeValidator(parse_duration), _between(SECOND, MAX_DELAY)]
TtlDuration = Annotated[float, BeforeValidator(parse_duration), _between(MIN_DURATION, MAX_TTL)]
# How long finished jobs are kept: from a second (tests, soaks) to a year (an audit trail).
RetentionDuration = Annotated[float, BeforeValidator(parse_duration), _between(SECOND, MAX_RETENTION)]
# Counts from 1 (a TOML float or boolean is refused, not rounded).
Concurrency = Annotated[int, Field(ge=1, le=MAX_CONCURRENCY, strict=True)]
Attempts = Annotated[int, Field(ge=1, le=MAX_ATTEMPTS, strict=True)]
Probes = Annotated[int, Field(ge=1, le=MAX_PROBES, strict=True)]
Count = Annotated[int, Field(ge=1, le=MAX_COUNT, strict=True)]

# A plain "COUNT/DURATION"
RateLimitSpec = Annotated[RateLimit, BeforeValidator(parse_rate_limit), AfterValidator(_limit_bounds)]
# Plain, or the table form
LimitEntry = Annotated[RateLimit, BeforeValidator(parse_limit_entry), AfterValidator(_limit_bounds)]


def _jobs_only(limit: RateLimit) -> RateLimit:
    if limit.units:
        raise ValueError(f"'{limit}': units are counted only in a dependency's own rate_limits")
    return limit


# A scope's and a shadow's limits count jobs only
JobLimitEntry = Annotated[LimitEntry, AfterValidator(_jobs_only)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


def read_secret_file(path: str | os.PathLike[str], variable: str) -> str:
    """A secret from a file (Docker/Kubernetes secrets): its text, without the trailing newline."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise ConfigError(f"{variable}: {path} is empty")
    return secret


def secret_from_env(env: Mapping[str, str], name: str) -> str | None:
    """JANUS_<NAME>, or the contents of the file JANUS_<NAME>_FILE names; never both."""
    variable = f"JANUS_{name.upper()}"
    direct, file = env.get(variable) or None, env.get(f"{variable}_FILE") or None
    if direct is not None and file is not None:
        raise ConfigError(f"set {variable} or {variable}_FILE, not both")
    if file is not None:
        return read_secret_file(file, f"{variable}_FILE")
    return direct


class Settings(BaseSettings):
    """Process settings: where things are and how the process behaves, from JANUS_* variables."""

    model_config = SettingsConfigDict(env_prefix="JANUS_", extra="ignore")

    config: Path | None = None
    amqp_url: str | None = None
    database_url: str | None = None
    # Keep credentials out of the environment: the URL is read from this file instead.
    amqp_url_file: Path | None = None
    database_url_file: Path | None = None
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=9464, ge=0, le=65535)  # 0 disables the metrics endpoint
    # A bearer token, read from this file, guards the HTTP API but /healthz and /readyz (janus/api/auth.py).
    http_token_file: Path | None = None
    # Seconds. Bounded so that a typo (1e-9, 1e300) is refused here, not met as a traceback later.
    leader_lease: float = Field(default=3.0, ge=0.1, le=3600)  # a leader's lease lasts this unrenewed
    leader_renew_every: float = Field(default=0.75, ge=0.01, le=3600)
    standby_poll_every: float = Field(default=0.5, ge=0.01, le=3600)
    # Seconds; Janus (and RabbitMQ) declare the connection dead after about 3 missed beats.
    amqp_heartbeat: int = Field(default=2, ge=0, le=600)  # 0 lets the broker decide (RabbitMQ: 60)
    db_timeout: float = Field(default=5.0, ge=0.01, le=3600)  # connect and short statements (lease, tick)
    reconnect_max_delay: float = Field(default=5.0, ge=0.01, le=3600)  # backoff cap after losing broker or DB
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object per line (janus/logs.py)

    @model_validator(mode="after")
    def _renewals_fit_the_lease(self) -> Settings:
        # As janus.service.leadership.LeaseTimings requires: one slow renewal must not lose it.
        margin = max(self.leader_lease * 0.2, 0.05)
        if self.leader_renew_every * 2 > self.leader_lease - margin:
            raise ValueError(
                f"JANUS_LEADER_RENEW_EVERY ({self.leader_renew_every:g}) must be under half of "
                f"JANUS_LEADER_LEASE ({self.leader_lease:g}) minus its safety margin ({margin:g})"
            )
        return self

    @model_validator(mode="after")
    def _urls_from_files(self) -> Settings:
        for name in ("amqp_url", "database_url"):
            file: Path | None = getattr(self, f"{name}_file")
            if file is None:
                continue
            variable = f"JANUS_{name.upper()}_FILE"
            if getattr(self, name):
                raise ConfigError(f"set JANUS_{name.upper()} or {variable}, not both")
            setattr(self, name, read_secret_file(file, variable))
        return self


# "dependencies.api.retention: ..." from a check of the whole file: the key the problem is at.
_PLACED = re.compile(r"^([a-z_]+(?:\.[A-Za-z0-9_.\-]+)*): (.*)$", re.S)


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "missing":
            message = "required key is missing"
        placed = _PLACED.match(message)
        if not item["loc"] and placed:  # a check across tables names the key it is about
            location, message = placed.groups()
        lines.append(f"  {location}: {message}")
    return "\n".join(lines)


def parse_config(
    data: dict[str, Any], source: str = "<config>", env: dict[str, str] | None = None
) -> JanusConfig:
    """Validate a decoded config; JANUS_AMQP_URL / JANUS_DATABASE_URL (or the files that
    JANUS_AMQP_URL_FILE / JANUS_DATABASE_URL_FILE name) override the file."""
    env = dict(os.environ) if env is None else env
    merged = dict(data)
    for key in ("amqp_url", "database_url"):
        override = secret_from_env(env, key)
        if override:
            merged[key] = override
    try:
        return JanusConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration in {source}:\n{_format_errors(exc)}") from None


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> JanusConfig:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {file}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"invalid TOML in {file}: not UTF-8 (byte {exc.start + 1})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {file}: {exc}") from None
    except RecursionError:
        # tomllib parses nested arrays and tables recursively: no policy nests this deep.
        raise ConfigError(f"invalid TOML in {file}: nested too deeply") from None
    return parse_config(data, str(file), env)
