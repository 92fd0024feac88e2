"""`janus simulate`'s time at each limit, per scope: how long each scope waited through it."""

from __future__ import annotations

import pytest

from janus.core.policy import DependencyPolicy, FairnessPolicy, RateLimit
from janus.simulate import parse_workload, simulate
from janus.simulate.logs import DependencyLog
from janus.simulate.report import render


def test_a_scope_is_at_a_limit_only_while_it_has_jobs_waiting() -> None:
    policy = DependencyPolicy(
        name="api", rate_limits=(RateLimit(count=20, window=1.0),), admission_ttl=0.1, lease_timeout=5.0
    )
    load = parse_workload(
        {
            "arrivals": [
                {"dependency": "api", "scope": "big", "count": 100},  # waits through 4 full windows
                {"dependency": "api", "scope": "small", "count": 1},  # admitted in the first one
            ],
            "services": {"api": {"duration": "10ms"}},
        },
        ["api"],
    )
    outcome = simulate([policy], load)
    log = outcome.dependencies["api"]
    limit = "rate (rate 20/1s)"
    big, small = log.scopes["big"], log.scopes["small"]
    assert log.at_limit[limit] > 3.0
    assert big.at_limit[limit] == pytest.approx(log.at_limit[limit])  # it waited throughout
    assert small.at_limit == {}  # nothing of it waited
    text = render(outcome, seed=0)
    assert f"    big: {limit}" in text
    assert "    small:" not in text


def _capped_run(fairness: FairnessPolicy, duration: str) -> tuple[DependencyLog, str]:
    policy = DependencyPolicy(name="api", admission_ttl=0.1, lease_timeout=5.0, fairness=fairness)
    load = parse_workload(
        {
            "arrivals": [
                {"dependency": "api", "scope": "big", "count": 10},
                {"dependency": "api", "scope": "small", "count": 2},  # never at its cap
            ],
            "services": {"api": {"duration": duration}},
        },
        ["api"],
    )
    outcome = simulate([policy], load)
    assert outcome.unfinished == 0
    return outcome.dependencies["api"], render(outcome, seed=0)


def test_time_at_a_scopes_concurrency_cap_is_counted() -> None:
    # 2 slots per scope, calls of 1 s: big's 10 jobs go 2 by 2 at 0, 1, 2, 3 and 4 s; it waits
    # at its cap from 0 to 4 s. The dependency itself holds nothing back.
    log, text = _capped_run(FairnessPolicy(scope_concurrency=2), "1s")
    limit = "scope_concurrency (scope concurrency 2)"
    assert log.scopes["big"].at_limit == {limit: pytest.approx(4.0)}
    assert log.scopes["small"].at_limit == {}
    assert log.at_limit == {limit: pytest.approx(4.0)}
    assert f"time at a limit: {limit} 4.00s" in text
    assert f"    big: {limit} 4.00s" in text


def test_time_at_a_scopes_rate_cap_is_counted() -> None:
    # 3 admissions per scope in any 1 s (the span of a limit counting starts is 1 s + TTL):
    # big's 10 jobs take four windows, and it waits at its cap through the first three.
    log, _ = _capped_run(FairnessPolicy(scope_rate_limits=(RateLimit(count=3, window=1.0),)), "10ms")
    (limit,) = log.scopes["big"].at_limit
    assert limit == "scope_rate (scope rate 3/1s)"
    spent = log.scopes["big"].at_limit[limit]
    assert 3.0 <= spent <= 3.0 + 3 * 0.1 + 1e-9
    assert log.at_limit == {limit: pytest.approx(spent)}
    assert log.scopes["small"].at_limit == {}
