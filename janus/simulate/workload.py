"""The workload file of `janus simulate`: what arrives, how each dependency answers, how the workers take work.

A TOML file, validated as strictly as the policy file (unknown keys are errors) and turned into
plain values the simulation runs on. Every error is one line that names the key
(`arrivals.2.rate: ...`), as `janus check-config` does for the policy. docs/simulate.md
describes the format.

The service's answers are drawn from a hash of (seed, job, attempt), not from one random
sequence: the same job gets the same answer whatever the policy and in whatever order it
runs, so two policies are compared on the same luck, and real workers can play the model
(`ServiceModel.answer`) for the jobs they receive.
"""

from __future__ import annotations

import math
import random
import re
import tomllib
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from janus.config import parse_duration, parse_rate_limit
from janus.config_loading import problem
from janus.core.policy import RateLimit
from janus.errors import ConfigError
from janus.simulate.costs import CostSpec
from janus.simulate.distributions import Distribution, mix
from janus.simulate.trace import TraceError, read_trace


class WorkloadError(ConfigError):
    """The workload file is invalid: one line naming the key."""


_ZERO = re.compile(r"^\s*0*(?:\.0*)?\s*(ms|s|m|h|d)?\s*$")


def parse_offset(value: object) -> float:
    """Seconds from the start of the simulation (0 allowed), in the policy file's duration syntax."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0.0
    if isinstance(value, str) and _ZERO.match(value) and any(c.isdigit() for c in value):
        return 0.0
    return parse_duration(value)


def _probability(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("a probability is a number from 0 to 1")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"a probability is from 0 to 1, got {value!r}")
    return float(value)


def _arrival_rate(value: object) -> float:
    """Jobs per second, from a number or "COUNT/DURATION" (as rate limits are written)."""
    if isinstance(value, bool):
        raise ValueError("a rate is jobs per second, or 'COUNT/DURATION' such as '600/1m'")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"a rate must be positive, got {value!r}")
        return float(value)
    limit = parse_rate_limit(value)
    return limit.count / limit.window


Offset = Annotated[float, BeforeValidator(parse_offset)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
Probability = Annotated[float, BeforeValidator(_probability)]
ArrivalRate = Annotated[float, BeforeValidator(_arrival_rate)]
Limit = Annotated[RateLimit, BeforeValidator(parse_rate_limit)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- durations ------------------------------------------------------------------------


class _Uniform(_Strict):
    uniform: tuple[Duration, Duration]

    @model_validator(mode="after")
    def _ordered(self) -> _Uniform:
        if self.uniform[1] < self.uniform[0]:
            raise ValueError("uniform: the second bound must be at least the first")
        return self


class _Exponential(_Strict):
    exponential: Duration  # the mean


class _Lognormal(_Strict):
    lognormal: Duration  # the median
    sigma: float = Field(default=0.5, gt=0.0, le=5.0, strict=False)


def _distribution(value: object) -> Distribution:
    if isinstance(value, Distribution):
        return value
    if not isinstance(value, dict):
        return Distribution(kind="constant", a=parse_duration(value))
    keys = set(value)
    if "uniform" in keys:
        low, high = _Uniform.model_validate(value).uniform
        return Distribution(kind="uniform", a=low, b=high)
    if "exponential" in keys:
        return Distribution(kind="exponential", a=_Exponential.model_validate(value).exponential)
    if "lognormal" in keys:
        parsed = _Lognormal.model_validate(value)
        return Distribution(kind="lognormal", a=parsed.lognormal, b=parsed.sigma)
    raise ValueError(
        "a duration is '100ms', or a table: { uniform = ['50ms', '150ms'] }, "
        "{ exponential = '100ms' } (mean) or { lognormal = '100ms', sigma = 0.5 } (median)"
    )


DurationSpec = Annotated[Distribution, BeforeValidator(_distribution)]


# -- the file's models ----------------------------------------------------------------


class ArrivalConfig(_Strict):
    """One stream of arrivals: `count` jobs at `at`, a steady `rate` from `start` to `stop`, or a CSV `trace`."""

    dependency: str | None = None
    scope: str = "default"
    count: int | None = Field(default=None, ge=1, le=100_000_000, strict=True)
    at: Offset = 0.0
    rate: ArrivalRate | None = None
    start: Offset = 0.0
    stop: Offset | None = None
    spacing: Literal["even", "poisson"] = "even"
    trace: str | None = None
    cost: CostSpec | None = (
        None  # each job's estimated units, declared at submission (janus/simulate/costs.py)
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ArrivalConfig:
        kinds = [name for name in ("count", "rate", "trace") if getattr(self, name) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of count (at once), rate (steady) or trace (a CSV file)")
        if self.trace is None and self.dependency is None:
            raise ValueError("dependency: required key is missing")
        if self.rate is not None:
            if self.stop is None:
                raise ValueError("stop: required with rate (when the steady arrivals end)")
            if self.stop <= self.start:
                raise ValueError("stop must be after start")
        return self


class OutageConfig(_Strict):
    start: Offset
    end: Offset

    @model_validator(mode="after")
    def _ordered(self) -> OutageConfig:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class ServiceConfig(_Strict):
    duration: DurationSpec
    error_duration: DurationSpec | None = None  # failures of an outage, throttled calls
    failure_probability: Probability = 0.0
    outages: list[OutageConfig] = Field(default_factory=list)
    capacity: Limit | None = None
    throttle_retry_after: Duration | None = None
    cost_factor: CostSpec | None = None  # a call's actual cost over its estimate, reported with the result


class WorkersConfig(_Strict):
    slots: int | None = Field(default=None, ge=1, le=1_000_000, strict=True)
    start_delay: Offset = 0.0
    report_delay: Offset = 0.0


class WorkloadConfig(_Strict):
    horizon: Duration | None = None  # stop simulating at this time, finished or not
    arrivals: list[ArrivalConfig] = Field(min_length=1)
    services: dict[str, ServiceConfig] = Field(default_factory=dict)
    workers: dict[str, WorkersConfig] = Field(default_factory=dict)


# -- the values the simulation runs on ------------------------------------------------


class Answer(NamedTuple):
    """What the dependency does with one call (a NamedTuple: one is made per simulated call)."""

    duration: float
    failed: bool
    error: str | None = None
    retry_after: float | None = None
    throttled: bool = False


_MASK = (1 << 64) - 1
_TO_UNIT = 2.0**-32


@dataclass(frozen=True, kw_only=True, slots=True)
class ServiceModel:
    """How one dependency answers calls."""

    dependency: str
    duration: Distribution
    error_duration: Distribution | None = None
    failure_probability: float = 0.0
    outages: tuple[tuple[float, float], ...] = ()
    capacity: RateLimit | None = None
    throttle_retry_after: float | None = None
    cost_factor: Distribution | None = None
    constant: Answer | None = field(default=None, init=False, repr=False, compare=False)

    def draws(self, seed: int, job_id: str, attempt: int) -> tuple[float, float]:
        """Two uniform draws in [0, 1) for this call, a function of (seed, job, attempt) alone."""
        x = mix((zlib.crc32(job_id.encode()) << 32) ^ (attempt << 8) ^ (seed & _MASK))
        return (x & 0xFFFFFFFF) * _TO_UNIT, (x >> 32) * _TO_UNIT

    def in_outage(self, at: float) -> bool:
        return any(start <= at < end for start, end in self.outages)

    def answer(self, seed: int, job_id: str, attempt: int, at: float, *, throttled: bool = False) -> Answer:
        """The answer to the call of `attempt` of `job_id` started at `at` (the caller, which
        counts the calls, says whether it is beyond the capacity)."""
        if self.constant is not None and not throttled and not self.outages:
            return self.constant  # nothing to draw
        u_duration, u_failure = self.draws(seed, job_id, attempt)
        error_duration = self.error_duration or self.duration
        if throttled:
            return Answer(
                error_duration.sample(u_duration),
                True,
                "429 throttled: beyond the capacity",
                self.throttle_retry_after,
                True,
            )
        if self.outages and self.in_outage(at):
            return Answer(error_duration.sample(u_duration), True, "503 outage")
        if u_failure < self.failure_probability:
            return Answer(self.duration.sample(u_duration), True, "500 failed")
        return Answer(self.duration.sample(u_duration), False)

    def __post_init__(self) -> None:
        # A fixed duration and no failures: every (non-throttled, non-outage) call gets one answer.
        if self.duration.kind == "constant" and self.failure_probability == 0.0:
            object.__setattr__(self, "constant", Answer(self.duration.a, False))


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerModel:
    """The workers of one dependency: handlers at once (None: as many as admitted), and delays."""

    slots: int | None = None
    start_delay: float = 0.0  # admission to start: publish, delivery, worker pick-up
    report_delay: float = 0.0  # finish to Janus applying the result


@dataclass(frozen=True, kw_only=True, slots=True)
class Stream:
    """One stream of arrivals, generated lazily in time order."""

    index: int
    dependency: str | None
    scope: str
    count: int | None = None
    at: float = 0.0
    rate: float | None = None
    start: float = 0.0
    stop: float | None = None
    spacing: str = "even"
    trace: tuple[tuple[float, str, str, str], ...] = ()
    cost: Distribution | None = None  # the estimate its jobs declare (None: the default, 1)
    trace_costs: Mapping[str, float] = field(default_factory=dict)  # a trace's own, per job

    def jobs(self, rng: random.Random) -> Iterator[tuple[float, str, str, str]]:
        """(t, job_id, dependency, scope), in time order."""
        if self.trace:
            yield from self.trace
            return
        assert self.dependency is not None
        prefix = f"{self.dependency}/{self.scope}/{self.index}-"
        dependency, scope = self.dependency, self.scope
        if self.count is not None:
            at = self.at
            for n in range(self.count):
                yield at, f"{prefix}{n}", dependency, scope
            return
        assert self.rate is not None
        assert self.stop is not None
        rate, stop, t, n = self.rate, self.stop, self.start, 0
        while True:
            if self.spacing == "poisson":
                t += rng.expovariate(rate)
            else:
                t = self.start + n / rate
            if t >= stop:
                return
            yield t, f"{prefix}{n}", dependency, scope
            n += 1

    def size(self) -> int | None:
        """How many jobs it brings, if known before running it."""
        if self.trace:
            return len(self.trace)
        if self.count is not None:
            return self.count
        if self.spacing == "even" and self.rate is not None and self.stop is not None:
            return math.ceil((self.stop - self.start) * self.rate - 1e-9)
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Workload:
    streams: tuple[Stream, ...]
    services: Mapping[str, ServiceModel]
    workers: Mapping[str, WorkerModel]
    horizon: float | None = None


# -- reading the file -----------------------------------------------------------------


def _first_error(error: ValidationError) -> str:
    """The first problem as `key.path: message`, and how many more there are."""
    items = error.errors()
    location, message = problem(items[0])
    more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
    return f"{location}: {message}{more}"


def parse_workload(
    data: Mapping[str, Any],
    dependencies: Sequence[str],
    *,
    source: str = "<workload>",
    base: Path | None = None,
) -> Workload:
    """Validate a decoded workload against the policy's `dependencies`; one-line WorkloadError."""
    try:
        config = WorkloadConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise WorkloadError(f"invalid workload in {source}: {_first_error(exc)}") from None

    def fail(key: str, message: str) -> WorkloadError:
        return WorkloadError(f"invalid workload in {source}: {key}: {message}")

    known = set(dependencies)
    for table in ("services", "workers"):
        for name in getattr(config, table):
            if name not in known:
                raise fail(f"{table}.{name}", "no such dependency in the policy")
    streams: list[Stream] = []
    used: set[str] = set()
    seen_ids: dict[str, str] = {}
    for index, arrival in enumerate(config.arrivals):
        key = f"arrivals.{index}"
        trace: tuple[tuple[float, str, str, str], ...] = ()
        trace_costs: Mapping[str, float] = {}
        if arrival.trace is not None:
            path = Path(arrival.trace)
            if not path.is_absolute() and base is not None:
                path = base / path
            try:
                trace, trace_costs = read_trace(path, f"{key}.trace")
            except TraceError as exc:
                raise WorkloadError(f"invalid workload in {source}: {exc}") from None
            for t, job_id, dependency, _ in trace:
                if dependency not in known:
                    raise fail(
                        f"{key}.trace",
                        f"job {job_id!r} at t={t:g}: no dependency {dependency!r} in the policy",
                    )
                if job_id in seen_ids:
                    raise fail(f"{key}.trace", f"job {job_id!r} appears twice")
                seen_ids[job_id] = key
                used.add(dependency)
        elif arrival.dependency not in known:
            raise fail(f"{key}.dependency", f"no dependency {arrival.dependency!r} in the policy")
        else:
            used.add(arrival.dependency)
        streams.append(
            Stream(
                index=index,
                dependency=arrival.dependency if arrival.trace is None else None,
                scope=arrival.scope,
                count=arrival.count,
                at=arrival.at,
                rate=arrival.rate,
                start=arrival.start,
                stop=arrival.stop,
                spacing=arrival.spacing,
                trace=trace,
                cost=arrival.cost,
                trace_costs=trace_costs,
            )
        )
    for name in sorted(used):
        if name not in config.services:
            raise fail(f"services.{name}", f"required: jobs of {name} arrive, so say how it answers")
    services = {
        name: ServiceModel(
            dependency=name,
            duration=service.duration,
            error_duration=service.error_duration,
            failure_probability=service.failure_probability,
            outages=tuple((outage.start, outage.end) for outage in service.outages),
            capacity=service.capacity,
            throttle_retry_after=service.throttle_retry_after,
            cost_factor=service.cost_factor,
        )
        for name, service in config.services.items()
    }
    workers = {
        name: WorkerModel(
            slots=config.workers[name].slots if name in config.workers else None,
            start_delay=config.workers[name].start_delay if name in config.workers else 0.0,
            report_delay=config.workers[name].report_delay if name in config.workers else 0.0,
        )
        for name in dependencies
    }
    return Workload(streams=tuple(streams), services=services, workers=workers, horizon=config.horizon)


def load_workload(path: str | Path, dependencies: Sequence[str]) -> Workload:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(f"cannot read workload {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise WorkloadError(f"invalid workload in {file}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WorkloadError(f"invalid TOML in {file}: {exc}") from None
    return parse_workload(data, dependencies, source=str(file), base=file.parent)


__all__ = [
    "Answer",
    "Distribution",
    "ServiceModel",
    "Stream",
    "WorkerModel",
    "Workload",
    "WorkloadError",
    "load_workload",
    "parse_offset",
    "parse_workload",
]
