"""Shadow limits: they never change a decision, and they count exactly what the limit, replayed
over the admissions really made, would have held back."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter

import pytest

from janus.core.policy import DependencyPolicy, RateCounting, RateLimit, ShadowLimits
from janus.core.scheduler import Scheduler
from tests.unit import test_core_trace

SHADOW = ShadowLimits(
    rate_limits=(
        RateLimit(count=3, window=1.0),
        RateLimit(count=5, window=2.5, counts=RateCounting.ADMISSIONS),
    ),
    concurrency=2,
    scope_concurrency=1,
    scope_rate_limits=(RateLimit(count=1, window=0.5),),
)


@pytest.mark.parametrize("seed", test_core_trace.SEEDS[::4])
def test_the_golden_traces_pass_with_shadow_limits_added(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = test_core_trace._policy  # draws from the trace's random stream: called as before

    def shadowed(rng: random.Random, name: str) -> DependencyPolicy:
        return dataclasses.replace(policy(rng, name), shadow=SHADOW)

    monkeypatch.setattr(test_core_trace, "_policy", shadowed)
    recorded = json.loads(test_core_trace.TRACES.read_text())
    assert test_core_trace.run(seed) == recorded[str(seed)]


def replay(admissions: list[tuple[str, float, int, int]], ttl: float) -> Counter[str]:
    """What SHADOW would have held back, replayed over (scope, at, held, scope_held) in order."""
    held_back: Counter[str] = Counter()
    before: list[tuple[str, float]] = []
    for scope, at, held, scope_held in admissions:
        if held > 2:
            held_back["concurrency 2"] += 1
        if scope_held > 1:
            held_back["scope concurrency 1"] += 1
        for limit in SHADOW.rate_limits:
            span = limit.admission_window(ttl)
            if sum(1 for _, t in before if t + span > at) >= limit.count:
                held_back[f"rate {limit}"] += 1
        for limit in SHADOW.scope_rate_limits:
            span = limit.admission_window(ttl)
            if sum(1 for s, t in before if s == scope and t + span > at) >= limit.count:
                held_back[f"scope rate {limit}"] += 1
        before.append((scope, at))
    return held_back


@pytest.mark.parametrize("seed", range(30))
def test_shadow_counts_match_a_replay_of_the_admissions(seed: int) -> None:
    rng = random.Random(seed)
    ttl = rng.choice([0.1, 0.5])
    policy = DependencyPolicy(
        name="api",
        admission_ttl=ttl,
        lease_timeout=100.0,
        concurrency=rng.choice([None, 4]),
        rate_limits=rng.choice([(), (RateLimit(count=6, window=1.0),)]),
        shadow=SHADOW,
    )
    core = Scheduler([policy], random.Random(seed))
    now = 0.0
    held: dict[str, str] = {}  # job -> scope
    admissions: list[tuple[str, float, int, int]] = []
    counted: Counter[str] = Counter()
    for step in range(300):
        roll = rng.random()
        if roll < 0.4:
            core.submit(
                job_id=f"j{step}", dependency="api", scope=f"s{rng.randint(0, 3)}", payload=None, now=now
            )
        elif roll < 0.6:
            now += rng.choice([0.05, 0.2, 0.5, 1.0])
        elif roll < 0.8 and held:
            job_id = rng.choice(sorted(held))
            del held[job_id]
            core.on_result(job_id=job_id, attempt=1, success=True, error=None, retry_after=None, now=now)
        else:
            for admission in core.admit(now).admissions:
                held[admission.job_id] = admission.scope
                in_scope = sum(1 for scope in held.values() if scope == admission.scope)
                admissions.append((admission.scope, admission.admitted_at, len(held), in_scope))
            counted.update({limit: n for (_, limit), n in core.drain_shadow().items()})
    expected = replay(admissions, ttl)
    assert counted == expected
    assert core.shadow_totals("api") == dict(expected)


def test_shadow_limits_are_read_from_the_policy_file() -> None:
    from janus.config import parse_config

    config = parse_config(
        {
            "dependencies": {
                "api": {"shadow": {"rate_limits": ["5/1s"], "concurrency": 3, "scope_concurrency": 1}}
            }
        },
        env={},
    )
    (policy,) = config.policies()
    assert policy.shadow == ShadowLimits(
        rate_limits=(RateLimit(count=5, window=1.0),), concurrency=3, scope_concurrency=1
    )
