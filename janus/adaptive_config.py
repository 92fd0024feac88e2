"""`[dependencies.NAME.adaptive]`: the file's form of the adaptive limits (core/adaptive.py).

Its own module so that config.py does not grow; config.py imports it, so the parsers of
config.py are reached at validation time, not at import time.
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from janus.core.policy import AdaptivePolicy, RateLimit

MAX_ADAPTIVE_CONCURRENCY = 1_000_000


def _rate(value: object) -> RateLimit:
    """A rate as the file says it, "COUNT/DURATION" (kept as a RateLimit, so that a stored
    policy version writes it back in the same form)."""
    from janus.config import _limit_bounds, parse_rate_limit

    return _limit_bounds(parse_rate_limit(value))


def _seconds(value: object) -> float:
    from janus.config import parse_duration

    return parse_duration(value)


def _seconds_or_never(value: object) -> float:
    """A duration, or 0 / "0s": never."""
    if value in (0, "0s") and not isinstance(value, bool):
        return 0.0
    return _seconds(value)


Rate = Annotated[RateLimit, BeforeValidator(_rate)]
Count = Annotated[int, Field(ge=1, le=MAX_ADAPTIVE_CONCURRENCY, strict=True)]


class AdaptiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, strict=True)
    min_rate: Rate = RateLimit(count=1, window=1.0)
    max_rate: Rate | None = None
    min_concurrency: Count = 1
    max_concurrency: Count | None = None
    initial_rate: Rate | None = None
    initial_concurrency: Count | None = None
    window: Annotated[float, BeforeValidator(_seconds), Field(ge=0.01, le=3600.0)] = 1.0
    decrease: float = Field(default=0.75, gt=0.0, lt=1.0, strict=True)
    increase: float = Field(default=0.05, gt=0.0, le=1.0, strict=True)
    tolerance: float = Field(default=1.25, gt=1.0, le=10.0, strict=True)
    min_samples: Count = 5
    # The latency floor is taken again this often, at min_concurrency ("0s": never).
    floor_interval: Annotated[float, BeforeValidator(_seconds_or_never), Field(ge=0.0, le=86400.0)] = 60.0

    @model_validator(mode="after")
    def _consistent(self) -> AdaptiveConfig:
        if self.enabled and self.max_rate is None and self.max_concurrency is None:
            raise ValueError("adaptive limits need max_rate, max_concurrency or both (what may adapt)")
        low = _per_second(self.min_rate) or 0.0
        high = _per_second(self.max_rate) or math.inf
        if low > high:
            raise ValueError(f"min_rate ({self.min_rate}) must be at most max_rate ({self.max_rate})")
        initial = _per_second(self.initial_rate)
        if initial is not None and not low <= initial <= high:
            raise ValueError("initial_rate must be between min_rate and max_rate")
        top = self.max_concurrency if self.max_concurrency is not None else math.inf
        if self.min_concurrency > top:
            raise ValueError(
                f"min_concurrency ({self.min_concurrency}) must be at most max_concurrency ({top})"
            )
        started = self.initial_concurrency
        if started is not None and not self.min_concurrency <= started <= top:
            raise ValueError("initial_concurrency must be between min_concurrency and max_concurrency")
        return self

    def to_policy(self) -> AdaptivePolicy:
        fields = dict(self)
        for key in ("min_rate", "max_rate", "initial_rate"):
            fields[key] = _per_second(fields[key])
        return AdaptivePolicy(**fields)


def _per_second(limit: RateLimit | None) -> float | None:
    return None if limit is None else limit.count / limit.window
