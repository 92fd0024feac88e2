"""`[dependencies.NAME.adaptive]`: the file's form of the adaptive limits (core/adaptive.py).

Its own module so that config.py does not grow; config.py imports it, so the parsers of
config.py are reached at validation time, not at import time.
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from janus.core.policy import AdaptivePolicy

MAX_ADAPTIVE_CONCURRENCY = 1_000_000


def _per_second(value: object) -> float:
    """A rate as the file says it ("40/1s", or the table form) in calls per second."""
    from janus.config import _limit_bounds, parse_limit_entry

    limit = _limit_bounds(parse_limit_entry(value))
    return limit.count / limit.window


def _seconds(value: object) -> float:
    from janus.config import parse_duration

    return parse_duration(value)


Rate = Annotated[float, BeforeValidator(_per_second)]
Count = Annotated[int, Field(ge=1, le=MAX_ADAPTIVE_CONCURRENCY, strict=True)]


class AdaptiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, strict=True)
    min_rate: Rate = 1.0
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

    @model_validator(mode="after")
    def _consistent(self) -> AdaptiveConfig:
        if self.enabled and self.max_rate is None and self.max_concurrency is None:
            raise ValueError("adaptive limits need max_rate, max_concurrency or both (what may adapt)")
        if self.max_rate is not None and self.min_rate > self.max_rate:
            raise ValueError(
                f"min_rate ({_rate(self.min_rate)}) must be at most max_rate ({_rate(self.max_rate)})"
            )
        top = self.max_concurrency if self.max_concurrency is not None else math.inf
        if self.min_concurrency > top:
            raise ValueError(
                f"min_concurrency ({self.min_concurrency}) must be at most max_concurrency ({top})"
            )
        if self.initial_rate is not None and not self.min_rate <= self.initial_rate <= (
            self.max_rate or math.inf
        ):
            raise ValueError("initial_rate must be between min_rate and max_rate")
        if (
            self.initial_concurrency is not None
            and not self.min_concurrency <= self.initial_concurrency <= top
        ):
            raise ValueError("initial_concurrency must be between min_concurrency and max_concurrency")
        return self

    def to_policy(self) -> AdaptivePolicy:
        return AdaptivePolicy(**self.model_dump())


def _rate(per_second: float) -> str:
    return f"{per_second:g}/1s"
