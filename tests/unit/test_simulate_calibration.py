"""`janus.simulate.calibration`: the workload's delays measured from worker records.

The strongest check is the round trip: a simulated run with known delays, read back as the
records a worker would keep, gives those delays back, for a rate-bound and a concurrency-bound
dependency (with retries), whatever the delays."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from janus.client.worker import WorkRecord
from janus.core.policy import DependencyPolicy, RateCounting, RateLimit, RetryPolicy
from janus.simulate.calibration import report_delay, start_delay
from janus.simulate.engine import simulate
from janus.simulate.workload import parse_workload


def record(
    admitted: float, started: float | None, finished: float | None, *, received: float | None = None
) -> WorkRecord:
    return WorkRecord(
        job_id=f"j{admitted}-{started}",
        dependency="api",
        scope="default",
        attempt=1,
        admitted_at=admitted,
        expires_at=admitted + 1.0,
        received_at=received if received is not None else (started if started is not None else admitted),
        started_at=started,
        finished_at=finished,
        outcome="success" if started is not None else "expired",
    )


RATE = DependencyPolicy(
    name="api", rate_limits=(RateLimit(count=2, window=1.0),), admission_ttl=0.5, lease_timeout=5.0
)
CONCURRENCY = DependencyPolicy(name="api", concurrency=2, admission_ttl=0.5, lease_timeout=5.0)


def test_start_delay_is_the_mean_admission_to_start_and_skips_unstarted_admissions() -> None:
    records = [
        record(0.0, 0.010, 0.1),
        record(0.0, 0.020, 0.1),
        record(0.0, 0.060, 0.1),
        record(1.0, None, None),
    ]
    hop = start_delay(records)
    assert hop is not None
    assert (hop.seconds, hop.median, hop.samples) == (pytest.approx(0.030), pytest.approx(0.020), 3)


def test_with_limited_handlers_the_start_delay_ends_at_the_workers_receipt() -> None:
    # The wait for a free handler (0.5 s here) is the simulation's to model, not a delay.
    hop = start_delay([record(0.0, 0.505, 0.6, received=0.005)], handlers_limited=True)
    assert hop is not None
    assert hop.seconds == pytest.approx(0.005)


def test_no_started_admission_and_no_held_admission_measure_nothing() -> None:
    assert start_delay([record(0.0, None, None)]) is None
    # Two places, two admissions: none waited for a place.
    assert report_delay([record(0.0, 0.01, 0.1), record(0.0, 0.01, 0.1)], CONCURRENCY) is None


def test_a_concurrency_slot_pairs_each_freeing_with_the_admission_that_took_it() -> None:
    records = [
        record(0.0, 0.01, 1.00),  # frees the first slot at 1.00...
        record(0.0, 0.01, 1.50),  # ...the second at 1.50
        record(1.02, 1.03, 2.00),  # took the first: 20 ms
        record(1.54, 1.55, 2.00),  # took the second: 40 ms
        record(2.50, 2.51, 3.00),  # after held_until: nothing was waiting, not a hop
    ]
    hop = report_delay(records, CONCURRENCY, held_until=2.0)
    assert hop is not None
    assert (hop.seconds, hop.samples) == (pytest.approx(0.030), 2)


def test_a_rate_windows_place_frees_a_window_after_its_call_began() -> None:
    records = [
        record(0.0, 0.01, 0.05),  # place ends at 1.01 once the result is in
        record(0.0, 0.02, 0.05),  # 1.02
        record(1.04, 1.05, 1.1),  # 1.04 - 1.01
        record(1.05, 1.06, 1.1),  # 1.05 - 1.02
    ]
    hop = report_delay(records, RATE)
    assert hop is not None
    assert (hop.seconds, hop.samples) == (pytest.approx(0.030), 2)


def test_an_unstarted_admission_holds_its_place_for_the_whole_span() -> None:
    # Refused unstarted: no call began, so the place stays until admitted_at + T + ttl.
    records = [
        record(0.0, None, None),
        record(0.0, 0.01, 0.05),
        record(1.02, 1.03, 1.1),
        record(1.51, 1.52, 1.6),
    ]
    hop = report_delay(records, RATE)
    assert hop is not None
    assert hop.seconds == pytest.approx(((1.02 - 1.01) + (1.51 - 1.5)) / 2)


@pytest.mark.parametrize(
    "policy",
    [
        # Two limits: which one held the dependency is for the caller to say.
        DependencyPolicy(
            name="api", rate_limits=(RateLimit(count=2, window=1.0),), concurrency=2, admission_ttl=0.5
        ),
        DependencyPolicy(
            name="api",
            rate_limits=(RateLimit(count=2, window=1.0), RateLimit(count=50, window=60.0)),
            admission_ttl=0.5,
        ),
        # Counting admissions: a place ends T after its admission, whatever a result says.
        DependencyPolicy(
            name="api",
            rate_limits=(RateLimit(count=2, window=1.0, counts=RateCounting.ADMISSIONS),),
            admission_ttl=0.5,
        ),
    ],
)
def test_a_limit_that_results_do_not_free_is_refused(policy: DependencyPolicy) -> None:
    with pytest.raises(ValueError, match="api: "):
        report_delay([record(0.0, 0.01, 0.05)], policy)


def records_of(outcome_rows: list[tuple[float, str, str, str, str, int, str]]) -> list[WorkRecord]:
    """The records a worker would keep, from a simulated timeline (no `slots`: received = started)."""
    admitted: dict[tuple[str, int], float] = {}
    started: dict[tuple[str, int], float] = {}
    records = []
    for t, event, job_id, dependency, scope, attempt, detail in outcome_rows:
        key = (job_id, attempt)
        if event == "admitted":
            admitted[key] = t
        elif event == "started":
            started[key] = t
        elif event == "finished":
            records.append(
                WorkRecord(
                    job_id=job_id,
                    dependency=dependency,
                    scope=scope,
                    attempt=attempt,
                    admitted_at=admitted[key],
                    expires_at=admitted[key] + 1.0,
                    received_at=started[key],
                    started_at=started[key],
                    finished_at=t,
                    outcome="success" if detail == "success" else "failure",
                )
            )
    return records


@settings(max_examples=15, deadline=None)
@given(
    start=st.integers(min_value=1, max_value=80).map(lambda ms: ms / 1000),
    report=st.integers(min_value=1, max_value=80).map(lambda ms: ms / 1000),
)
def test_a_simulated_run_read_back_gives_its_delays(start: float, report: float) -> None:
    policies = [
        DependencyPolicy(
            name="api", rate_limits=(RateLimit(count=10, window=1.0),), admission_ttl=0.3, lease_timeout=5.0
        ),
        DependencyPolicy(
            name="slow",
            concurrency=3,
            admission_ttl=0.5,
            lease_timeout=5.0,
            retry=RetryPolicy(base_delay=0.2, max_delay=0.5, jitter=0.0, max_attempts=3),
        ),
    ]
    workload = parse_workload(
        {
            "arrivals": [
                {"dependency": "api", "scope": "a", "count": 40},
                {"dependency": "api", "scope": "b", "count": 20},
                {"dependency": "slow", "count": 20},
            ],
            "services": {
                "api": {"duration": "30ms"},
                "slow": {"duration": {"uniform": ["200ms", "600ms"]}, "failure_probability": 0.2},
            },
            "workers": {name: {"start_delay": start, "report_delay": report} for name in ("api", "slow")},
        },
        ["api", "slow"],
    )
    outcome = simulate(policies, workload, seed=3, timeline=True)
    assert outcome.timeline is not None
    for policy in policies:
        records = [r for r in records_of(outcome.timeline) if r.dependency == policy.name]
        held_until = max(r.admitted_at for r in records if r.attempt == 1)
        start_hop = start_delay(records)
        report_hop = report_delay(records, policy, held_until=held_until)
        assert start_hop is not None
        assert report_hop is not None
        assert start_hop.seconds == pytest.approx(start, abs=1e-9), policy.name
        assert report_hop.seconds == pytest.approx(report, abs=1e-9), policy.name
        assert report_hop.samples >= 15
