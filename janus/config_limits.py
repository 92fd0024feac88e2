"""Durations and rate limits as a policy file writes them: "2s", "100/1s", "90000 units/1m".

Apart from `janus.config` so that the parsing of limits has a room of its own.
"""

from __future__ import annotations

import math
import re

from janus.core.policy import RateCounting, RateLimit

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)?\s*(ms|s|m|h|d)\s*$")
_RATE = re.compile(r"^\s*([0-9]+)\s*(units\s*)?/\s*(.+)$")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string with a unit: "250ms", "2s", "5m", "1h", "1d"."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '2s'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"invalid duration {value!r}: use a number of seconds or e.g. '250ms', '2s', '5m', '1h'"
            )
        number, unit = match.groups()
        seconds = float(number if number is not None else 1) * _UNITS[unit]
    else:
        raise ValueError("a duration is a number of seconds or a string like '2s'")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive and finite, got {value!r}")
    return seconds


def parse_rate_limit(value: object) -> RateLimit:
    """A RateLimit from "COUNT/DURATION", e.g. "100/1s" or "2000/1m" ("100/s" means one second), or
    from "COUNT units/DURATION", e.g. "90000 units/1m", which counts the jobs' costs."""
    if isinstance(value, RateLimit):
        return value
    if not isinstance(value, str):
        raise ValueError("a rate limit is a string 'COUNT/DURATION', e.g. '100/1s'")
    match = _RATE.match(value)
    if match is None:
        raise ValueError(f"invalid rate limit {value!r}: expected 'COUNT/DURATION', e.g. '100/1s'")
    count = int(match.group(1))
    if count < 1:
        raise ValueError(f"invalid rate limit {value!r}: COUNT must be at least 1")
    try:
        window = parse_duration(match.group(3))
    except ValueError as exc:
        raise ValueError(f"invalid rate limit {value!r}: {exc}") from None
    return RateLimit(count=count, window=window, units=match.group(2) is not None)


_LIMIT_KEYS = ("limit", "counts")
_COUNTINGS = ", ".join(repr(c.value) for c in RateCounting)


def parse_limit_entry(value: object) -> RateLimit:
    """An entry of `rate_limits` or `scope_rate_limits`: "COUNT/DURATION" (counting starts), or
    a table { limit = "COUNT/DURATION", counts = "starts" | "admissions" }."""
    if not isinstance(value, dict):
        return parse_rate_limit(value)
    unknown = sorted(str(key) for key in value if key not in _LIMIT_KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in a rate limit table (keys: limit, counts)")
    if "limit" not in value:
        raise ValueError("a rate limit table needs 'limit', e.g. { limit = '100/1s', counts = 'admissions' }")
    limit = parse_rate_limit(value["limit"])
    counts = value.get("counts", RateCounting.STARTS.value)
    if not isinstance(counts, str) or counts not in {c.value for c in RateCounting}:
        raise ValueError(f"invalid counts {counts!r}: one of {_COUNTINGS}")
    return RateLimit(count=limit.count, window=limit.window, counts=RateCounting(counts), units=limit.units)
