"""Distributions the workload file draws from (call durations, costs), sampled from one uniform
draw each, and the hash that makes every draw a function of (seed, job, attempt) alone."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

_MASK = (1 << 64) - 1


@dataclass(frozen=True, kw_only=True, slots=True)
class Distribution:
    """A distribution of durations or costs, sampled by inverse transform from one uniform draw."""

    kind: Literal["constant", "uniform", "exponential", "lognormal"]
    a: float  # constant: the value; uniform: low; exponential: mean; lognormal: median
    b: float = 0.0  # uniform: high; lognormal: sigma

    def sample(self, u: float) -> float:
        kind = self.kind
        if kind == "constant":
            return self.a
        if kind == "uniform":
            return self.a + (self.b - self.a) * u
        if kind == "exponential":
            return -self.a * math.log1p(-u)
        return self.a * math.exp(self.b * _NORMAL.inv_cdf(min(max(u, 1e-12), 1 - 1e-12)))

    def __str__(self) -> str:
        if self.kind == "constant":
            return f"{self.a:g}s"
        if self.kind == "uniform":
            return f"uniform {self.a:g}s..{self.b:g}s"
        if self.kind == "exponential":
            return f"exponential, mean {self.a:g}s"
        return f"lognormal, median {self.a:g}s, sigma {self.b:g}"


_NORMAL = NormalDist()


def mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit value from any 64-bit input."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)
