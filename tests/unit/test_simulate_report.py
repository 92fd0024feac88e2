"""`janus simulate`'s time at each limit, per scope: how long each scope waited through it."""

from __future__ import annotations

import pytest

from janus.core.policy import DependencyPolicy, RateLimit
from janus.simulate import parse_workload, simulate
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
