"""Bounds of what the policy file may say, and the validated types its models are built of:
beyond a bound a value is a typo or cannot work, and check-config says so."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)

from janus.config_limits import _DURATION, parse_duration, parse_limit_entry, parse_rate_limit
from janus.core.policy import (
    RateLimit,
)

# janus.protocol's ENVELOPE_BYTES and MAX_RESULT_BYTES (the config may not import the protocol;
# a unit test keeps them equal): what max_message_size must leave room for.
MESSAGE_ENVELOPE_BYTES = 8 * 1024
LARGEST_RESULT_BYTES = 8 * 1024 + 6 * 2000
# RabbitMQ refuses a max_message_size above 512 MiB.
MAX_MESSAGE_SIZE_CEILING = 512 * 1024 * 1024


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
