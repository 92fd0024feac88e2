"""Costed jobs in a simulation: the estimate a stream's jobs declare, and what their calls really cost.

A stream of arrivals may give its jobs a `cost` (the estimate the producer sends, a number or
a distribution of numbers), and a service a `cost_factor` (the actual cost of a call over its
estimate, a distribution: `{ uniform = [0.5, 1.5] }` is "off by up to 50 % either way"). The
engine submits each job with its estimate, so the core charges it in the unit limits at
admission as it does in production, and reports the actual cost with the result, which the
core settles in place of the estimate. Like the service's other draws, each is a function of
(seed, job, attempt) alone: a paired comparison of two policies sees the same costs.
"""

from __future__ import annotations

import math
import zlib
from typing import Annotated

from pydantic import BeforeValidator

from janus.simulate.distributions import Distribution, mix

_MASK = (1 << 64) - 1
_TO_UNIT = 2.0**-53
_FORMS = (
    "a cost is a non-negative number, or a table: { uniform = [500, 3000] }, "
    "{ exponential = 1000 } (mean) or { lognormal = 1000, sigma = 0.5 } (median)"
)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(_FORMS)
    return float(value)


def _cost_distribution(value: object) -> Distribution:
    """A number (every job the same), or a distribution of numbers in the shapes durations take."""
    if isinstance(value, Distribution):
        return value
    if not isinstance(value, dict):
        return Distribution(kind="constant", a=_number(value))
    if set(value) == {"uniform"} and isinstance(value["uniform"], list) and len(value["uniform"]) == 2:
        low, high = (_number(v) for v in value["uniform"])
        if high < low:
            raise ValueError("uniform: the low end comes first")
        return Distribution(kind="uniform", a=low, b=high)
    if set(value) == {"exponential"}:
        return Distribution(kind="exponential", a=_number(value["exponential"]))
    if set(value) in ({"lognormal"}, {"lognormal", "sigma"}):
        return Distribution(
            kind="lognormal", a=_number(value["lognormal"]), b=_number(value.get("sigma", 0.5))
        )
    raise ValueError(_FORMS)


CostSpec = Annotated[Distribution, BeforeValidator(_cost_distribution)]


def uniform(seed: int, job_id: str, attempt: int, salt: int) -> float:
    """A uniform draw in [0, 1) for (seed, job, attempt), apart from the service's own draws."""
    x = mix((zlib.crc32(job_id.encode()) << 32) ^ (attempt << 8) ^ (salt << 40) ^ (seed & _MASK))
    return (mix(x) >> 11) * _TO_UNIT


_ESTIMATE, _ACTUAL = 1, 2


def estimate(cost: Distribution | None, seed: int, job_id: str) -> float:
    """The cost job `job_id` declares at submission (1, the protocol's default, if none is given)."""
    if cost is None:
        return 1.0
    if cost.kind == "constant":
        return cost.a
    return max(0.0, cost.sample(uniform(seed, job_id, 0, _ESTIMATE)))


def actual(
    factor: Distribution | None, estimated: float, seed: int, job_id: str, attempt: int
) -> float | None:
    """What the call of `attempt` really cost, reported with its result (None: not reported)."""
    if factor is None:
        return None
    return max(0.0, estimated * factor.sample(uniform(seed, job_id, attempt, _ACTUAL)))
