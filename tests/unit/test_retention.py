"""Retention decisions (janus/core/retention.py) and their configuration: what may be pruned, the
batch size, and the [retention] tables."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from janus.config import format_duration, parse_config
from janus.core.jobs import JobState
from janus.core.retention import (
    BatchSizing,
    Retention,
    RetentionPolicy,
    TableChurn,
    prunable,
    records_cutoff,
    vacuum_due,
)

DAY = 86400.0
DEFAULT = RetentionPolicy(succeeded=DAY, dead=14 * DAY, dedup_window=DAY)
RETENTION = Retention(
    default=DEFAULT,
    overrides={"audit": RetentionPolicy(succeeded=30 * DAY, dead=30 * DAY, dedup_window=7 * DAY)},
)
NOW = 100 * DAY

PRUNABLE_CASES = [
    # (state, dependency, finished how long ago or None, prunable?)
    (JobState.WAITING, "api", None, False),  # waiting: never
    (JobState.WAITING, "api", 100 * DAY, False),  # a revived dead job keeps no finished_at, but even so
    (JobState.ADMITTED, "api", 100 * DAY, False),  # admitted: never
    (JobState.SUCCEEDED, "api", DAY - 1, False),  # within its day
    (JobState.SUCCEEDED, "api", DAY, False),  # exactly at the cutoff: kept (strictly before goes)
    (JobState.SUCCEEDED, "api", DAY + 1, True),  # past it
    (JobState.DEAD, "api", 2 * DAY, False),  # dead jobs keep their history two weeks
    (JobState.DEAD, "api", 14 * DAY + 1, True),
    (JobState.SUCCEEDED, "audit", 2 * DAY, False),  # a dependency that keeps longer
    (JobState.SUCCEEDED, "audit", 30 * DAY + 1, True),
    (JobState.SUCCEEDED, "unconfigured", DAY + 1, True),  # no longer configured: the default
    (JobState.SUCCEEDED, "api", None, False),  # a terminal row without finished_at: kept
]


@pytest.mark.parametrize(("state", "dependency", "ago", "expected"), PRUNABLE_CASES)
def test_what_may_be_pruned(state: JobState, dependency: str, ago: float | None, expected: bool) -> None:
    finished_at = None if ago is None else NOW - ago
    assert (
        prunable(RETENTION, state=state, dependency=dependency, finished_at=finished_at, now=NOW) is expected
    )


durations = st.floats(min_value=0.001, max_value=1e8, allow_nan=False)
policies = st.builds(RetentionPolicy, succeeded=durations, dead=durations, dedup_window=durations)


@given(
    policy=policies,
    state=st.sampled_from(list(JobState)),
    finished_at=st.none() | st.floats(min_value=0, max_value=1e10, allow_nan=False),
    now=st.floats(min_value=0, max_value=1e10, allow_nan=False),
)
def test_never_a_waiting_or_admitted_job_nor_one_within_its_retention_or_window(
    policy: RetentionPolicy, state: JobState, finished_at: float | None, now: float
) -> None:
    retention = Retention(default=policy)
    if prunable(retention, state=state, dependency="d", finished_at=finished_at, now=now):
        assert state in (JobState.SUCCEEDED, JobState.DEAD)
        assert finished_at is not None
        kept = policy.succeeded if state is JobState.SUCCEEDED else policy.dead
        assert now - finished_at >= kept
        assert now - finished_at >= policy.dedup_window  # a repeat within the window stays a duplicate


@given(
    policy=policies,
    state=st.sampled_from([JobState.SUCCEEDED, JobState.DEAD]),
    now=st.floats(min_value=0, max_value=1e10, allow_nan=False),
)
def test_the_leaders_records_outlast_every_job_of_the_default_policy(
    policy: RetentionPolicy, state: JobState, now: float
) -> None:
    """A retry request or a term is never pruned while a job it may concern is still kept."""
    retention = Retention(default=policy)
    assert records_cutoff(retention, now) <= retention.cutoff(state, "d", now)
    assert records_cutoff(retention, now) <= now - policy.dedup_window


@given(
    size=st.integers(min_value=1, max_value=50_000),
    elapsed=st.floats(min_value=0, max_value=10, allow_nan=False),
    timed_out=st.booleans(),
)
def test_batch_sizes_stay_within_bounds_and_shrink_when_slow(
    size: int, elapsed: float, timed_out: bool
) -> None:
    sizing = BatchSizing(budget=0.05, smallest=10, largest=10_000)
    after = sizing.next_size(size, elapsed, timed_out=timed_out)
    assert sizing.smallest <= after <= sizing.largest
    if timed_out or elapsed > sizing.budget:
        assert after <= max(size, sizing.smallest)


BATCH_CASES = [
    # (size, elapsed, timed out, next size)
    (100, 0.01, False, 200),  # well under budget: double
    (100, 0.03, False, 100),  # around the budget: keep
    (100, 0.08, False, 50),  # over it: halve
    (100, 0.01, True, 50),  # cancelled: halve, whatever the clock said
    (10, 0.5, True, 10),  # never below the smallest
    (8000, 0.001, False, 10_000),  # never above the largest
]


@pytest.mark.parametrize(("size", "elapsed", "timed_out", "expected"), BATCH_CASES)
def test_batch_size_adapts_to_the_budget(size: int, elapsed: float, timed_out: bool, expected: int) -> None:
    assert BatchSizing(budget=0.05).next_size(size, elapsed, timed_out=timed_out) == expected


def test_defaults_and_overrides_from_the_file() -> None:
    config = parse_config(
        {
            "dependencies": {
                "api": {},
                "audit": {"retention": {"succeeded": "30d", "dedup_window": "7d"}},
            }
        },
        env={},
    )
    retention = config.retention_policies()
    assert retention.of("api") == DEFAULT  # on by default: River's day for successes, two weeks dead
    assert retention.of("audit") == RetentionPolicy(succeeded=30 * DAY, dead=14 * DAY, dedup_window=7 * DAY)
    assert retention.of("gone") == DEFAULT
    assert config.retention.prune_every == 10.0
    assert config.retention.sizing().budget == 0.05


def test_keep_for_covers_the_dedup_window() -> None:
    # The config refuses a window longer than a retention; the core still never prunes inside it.
    policy = RetentionPolicy(succeeded=10.0, dead=10.0, dedup_window=60.0)
    assert policy.keep_for(JobState.SUCCEEDED) == 60.0
    with pytest.raises(ValueError, match="never pruned"):
        policy.keep_for(JobState.WAITING)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(86400.0, "1d"), (14 * 86400.0, "14d"), (5400.0, "90m"), (2.0, "2s"), (0.25, "250ms")],
)
def test_durations_are_told_in_their_largest_whole_unit(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


VACUUM_CASES = [
    # (live, dead, changed since ANALYZE, due?) -- PostgreSQL's default autovacuum thresholds
    (0, 0, 0, False),  # nothing happened
    (1000, 250, 0, False),  # dead within 50 + 20 %
    (1000, 251, 0, True),  # past it: VACUUM frees their room for new rows
    (1000, 0, 151, True),  # a table that grew: ANALYZE, so plans follow its size
    (0, 0, 51, True),  # a fresh table's first rows: its plans were made when it was empty
    (1_000_000, 100_000, 50_000, False),  # big tables: proportionally more
]


@pytest.mark.parametrize(("live", "dead", "changed", "due"), VACUUM_CASES)
def test_vacuum_is_due_as_autovacuum_would_find_it(live: int, dead: int, changed: int, due: bool) -> None:
    churn = TableChurn(name="jobs", live_rows=live, dead_rows=dead, changed_rows=changed)
    assert vacuum_due(churn) is due
