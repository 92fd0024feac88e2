"""Skipping the admission step is exact with several dependencies, and the ramp wakeup it relies on.

The random runs of tests/unit/test_simulate.py with two dependencies found a run where leaving
the step out changed an admission: a recovery ramp announced that it freed at `started + k`
seconds, but `started + k` rounded in floating point reads step k - 1 of its staircase, so the
step at that instant admitted nothing and the wakeup was lost; another dependency's results,
when they ran the step, hid it. These tests pin the wakeup and the rule.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janus.core.policy import DependencyPolicy, FairnessPolicy, RateLimit, RecoveryPolicy
from janus.core.rate import admission_windows
from janus.core.recovery import RAMP_WINDOW, Ramp, _step_starts
from janus.simulate import engine, parse_workload
from janus.simulate.workload import Workload
from tests.unit.test_simulate import assert_skipping_changes_nothing, scenarios, timeline

# The ramp of the run that found it: begun at this instant, step 3 starts 3 s later.
FOUND_STARTED = 5.461452336385105


@given(st.floats(0.0, 1e6, allow_nan=False), st.integers(1, 600))
def test_a_step_starts_where_the_staircase_reads_it(started: float, steps: int) -> None:
    at = _step_starts(started, steps)
    assert math.floor((at - started) / RAMP_WINDOW) >= steps
    assert at >= started + steps * RAMP_WINDOW  # never before: a step does not start early
    assert math.floor((math.nextafter(at, -math.inf) - started) / RAMP_WINDOW) < steps or at == (
        started + steps * RAMP_WINDOW
    )


def test_the_ramp_frees_at_the_instant_it_announces() -> None:
    assert (FOUND_STARTED + 3.0) - FOUND_STARTED < 3.0  # the rounding this is about
    policy = DependencyPolicy(
        name="mail",
        rate_limits=(RateLimit(count=24, window=1.0),),
        admission_ttl=0.2,
        lease_timeout=0.5,
        recovery=RecoveryPolicy(ramp=30.0, start=0.1),
    )
    windows = admission_windows(policy.rate_limits, policy.admission_ttl)
    ramp = Ramp(policy)
    ramp.record(0.0, 1, 0)
    ramp.outage(1.0)
    ramp.begin(FOUND_STARTED)
    now = FOUND_STARTED + 2.5
    share = ramp.share(now)
    assert share is not None
    for window in windows:
        window.record_many(now, math.floor(24 * share))  # the ramp's cap, all used
    assert ramp.room(now, share, windows, 0) <= 0
    free = ramp.free_at(now, share, windows, 0)
    assert free is not None
    assert free > now
    later = ramp.share(free)
    assert later is not None
    assert ramp.room(free, later, windows, 0) > 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(("api", "mail", "batch")))
def test_skipping_changes_nothing_with_three_dependencies(
    scenario: tuple[list[DependencyPolicy], Workload],
) -> None:
    assert_skipping_changes_nothing(*scenario)


class _ArrivalsTicking(engine.Simulation):
    """Skips results' steps as the engine does, and never an arrival's."""

    def _skips_admission(self, now: float) -> bool:
        return not self._arrivals and super()._skips_admission(now)


def _held_arrivals(limit: dict[str, object]) -> tuple[list[DependencyPolicy], Workload]:
    """A backlog that keeps the dependency at its limit while Poisson arrivals keep coming."""
    policy = DependencyPolicy(
        name="api",
        rate_limits=(RateLimit(count=20, window=1.0),),
        concurrency=limit.get("concurrency"),  # type: ignore[arg-type]
        admission_ttl=0.1,
        lease_timeout=5.0,
        fairness=FairnessPolicy(scope_concurrency=limit.get("scope_concurrency")),  # type: ignore[arg-type]
    )
    load = parse_workload(
        {
            "arrivals": [
                {"dependency": "api", "scope": "bulk", "count": 200},
                {"dependency": "api", "scope": "live", "rate": 15, "stop": "8s", "spacing": "poisson"},
            ],
            "services": {"api": {"duration": {"uniform": ["50ms", "400ms"]}, "failure_probability": 0.1}},
        },
        ["api"],
    )
    return [policy], load


@pytest.mark.parametrize(
    "limit", [{}, {"concurrency": 3}, {"scope_concurrency": 2}], ids=["rate", "concurrency", "scope_cap"]
)
def test_arrivals_at_a_held_dependency_skip_the_step_and_change_nothing(limit: dict[str, object]) -> None:
    policies, load = _held_arrivals(limit)
    assert_skipping_changes_nothing(policies, load)
    fast = engine.Simulation(policies, load, seed=2, timeline=True).run()
    arrivals_ticking = _ArrivalsTicking(policies, load, seed=2, timeline=True).run()
    assert timeline(fast) == timeline(arrivals_ticking)
    assert fast.ticks < arrivals_ticking.ticks  # some arrivals came while it was held, and took no step
