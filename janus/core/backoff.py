"""When a failed job may run again."""

from __future__ import annotations

import random

from janus.core.policy import RetryPolicy


def backoff_ceiling(policy: RetryPolicy, failures: int) -> float:
    """d = min(max_delay, base_delay × 2^(k−1)) after the k-th failed attempt."""
    if failures < 1:
        return 0.0
    # Cap the exponent: 2**1100 overflows a float long before max_delay matters.
    exponent = min(failures - 1, 1000)
    return min(policy.max_delay, policy.base_delay * 2.0**exponent)


def retry_delay(policy: RetryPolicy, failures: int, rng: random.Random) -> float:
    """A delay drawn uniformly from [d × (1 − jitter), d]."""
    ceiling = backoff_ceiling(policy, failures)
    return rng.uniform(ceiling * (1.0 - policy.jitter), ceiling)
