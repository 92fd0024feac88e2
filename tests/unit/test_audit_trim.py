"""The audit of a limit counting starts, once results trim the admissions' places (core/rate.py).

Janus may admit more than COUNT in a span of T + ttl when results tell it the calls began early;
the audit then judges the places admissions held, ending no earlier than T after the admission
plus the time it waited in the worker (`janus.audit.place_end`), and the starts as before.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from janus.audit import audit, max_in_window, most_places_held, place_end
from janus.client.worker import WorkRecord
from janus.core.policy import DependencyPolicy, RateCounting, RateLimit

LIMIT = RateLimit(count=2, window=10.0)
API = DependencyPolicy(name="api", rate_limits=(LIMIT,), admission_ttl=1.0, lease_timeout=5.0)


def record(job_id: str, admitted: float, **changes: Any) -> WorkRecord:
    """Received at once, started 0.1 s after its admission, done at once."""
    base = WorkRecord(
        job_id=job_id,
        dependency="api",
        scope="default",
        attempt=1,
        admitted_at=admitted,
        expires_at=admitted + API.admission_ttl,
        received_at=admitted,
        started_at=admitted + 0.1,
        finished_at=admitted + 0.1,
        outcome="success",
    )
    return replace(base, **changes)


CASES = [
    # (records, worst places held, worst starts in 10 s, ok)
    (
        [record("a", 0.0), record("b", 1.0), record("c", 10.5)],
        2,
        2,
        True,
    ),  # three admissions in 11 s, as trimming allows: a's place ended at 10.1
    (
        [record("a", 0.0), record("b", 1.0), record("c", 10.05)],
        3,
        2,
        False,
    ),  # c came before a's place ended (10.1): its start at 10.15 hides it from the starts' check
    (
        [
            record("a", 0.0, received_at=0.0, started_at=0.9),
            record("b", 1.0),
            record("c", 10.5, started_at=10.95),
        ],
        3,
        2,
        False,
    ),  # a waited 0.9 s in the worker: its place held until 10.9, c came at 10.5 (starts alone pass)
    (
        [
            record("a", 0.0, started_at=None, finished_at=None, outcome="expired"),
            record("b", 1.0),
            record("c", 10.5),
        ],
        3,
        2,
        False,
    ),  # a never started: nothing trims it, its place held the whole span (until 11)
]


def test_places_are_judged_as_trimmed() -> None:
    for records, places, starts, ok in CASES:
        report = audit(records, {"api": API})
        api = report.dependencies["api"]
        assert (api.worst_rate["2/10s"], api.worst_start_rate["2/10s"], report.ok) == (places, starts, ok), (
            records
        )


def test_a_limit_counting_admissions_is_not_trimmed() -> None:
    admissions = RateLimit(count=2, window=10.0, counts=RateCounting.ADMISSIONS)
    assert place_end(record("a", 0.0), admissions, 1.0) == 0.0 + 10.0
    assert place_end(record("a", 0.0), LIMIT, 1.0) == 0.0 + 0.1 + 10.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40).map(lambda t: t / 4), max_size=15), st.sampled_from([0.25, 1.0, 2.5]))
def test_whole_spans_count_as_the_densest_window(admitted: list[float], span: float) -> None:
    # Places that all last the span: the most held at once is the densest window of the span.
    assert most_places_held(admitted, [a + span for a in admitted]) == max_in_window(admitted, span)
