"""A member's snapshot against a real database: only the dependencies it leads, read as one
leader reads them all (store/repository.py `Store.snapshot(only=...)`)."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from janus.core.adaptive import AdaptiveState, Signal
from janus.core.circuit import CircuitSnapshot, CircuitState
from janus.core.gates import GateState
from janus.core.jobs import Admission, Job, JobState
from janus.core.rebuild import Snapshot
from janus.store.repository import Store

pytestmark = pytest.mark.integration

DEPENDENCIES = ("a", "b", "c")


def jobs_of(dependency: str, base: int) -> tuple[list[tuple[Job, str | None]], list[Job], list[Admission]]:
    """Per dependency: two first attempts in two scopes (backlog), one admitted job, one retry."""
    new = [
        (Job(job_id=f"{dependency}-{i}", dependency=dependency, scope=f"s{i % 2}", payload=None,
             seq=base + i, eligible_at=1.0), None)
        for i in range(4)
    ]  # fmt: skip
    admitted = Job(
        job_id=f"{dependency}-0",
        dependency=dependency,
        scope="s0",
        payload=None,
        seq=base,
        state=JobState.ADMITTED,
        attempt=1,
        eligible_at=1.0,
        admitted_at=10.0 + base,
        expires_at=11.0 + base,
        lease_deadline=70.0 + base,
    )
    retry = admitted._replace(
        job_id=f"{dependency}-1", scope="s1", seq=base + 1, state=JobState.WAITING, failures=1
    )
    return new, [admitted, retry], [Admission.of(admitted), Admission.of(retry)]


def gate(dependency: str) -> GateState:
    circuit = CircuitSnapshot(state=CircuitState.OPEN, since=5.0, open_until=50.0, open_for=45.0)
    return GateState(dependency=dependency, circuit=circuit, pause_until=None)


def adaptive(dependency: str) -> AdaptiveState:
    return AdaptiveState(
        dependency=dependency,
        rate=20.0,
        concurrency=4.0,
        slow_start=False,
        reason="lowered",
        changed_at=9.0,
        signal=Signal.THROTTLED,
        concurrency_slow_start=False,
        latency_floor=0.1,
    )


def restricted(snapshot: Snapshot, names: set[str]) -> Snapshot:
    """One leader's snapshot with only these dependencies' rows: what a member must read."""
    kept_jobs = [job for job in snapshot.jobs if job.dependency in names]
    kept_backlog = [entry for entry in snapshot.backlog if entry.dependency in names]
    return dataclasses.replace(
        snapshot,
        jobs=kept_jobs,
        backlog=kept_backlog,
        admissions={d: v for d, v in snapshot.admissions.items() if d in names},
        unit_admissions={d: v for d, v in snapshot.unit_admissions.items() if d in names},
        budget_admissions={d: v for d, v in snapshot.budget_admissions.items() if d in names},
        gates=[g for g in snapshot.gates if g.dependency in names],
        adaptive=[s for s in snapshot.adaptive if s.dependency in names],
        max_seq=max([*(j.seq for j in kept_jobs), *(e.max_seq for e in kept_backlog)], default=0),
    )


async def test_a_members_snapshot_holds_only_the_rows_of_the_dependencies_it_leads(database: str) -> None:
    store = await Store.connect(database)
    try:
        holder = uuid.uuid4()
        epoch = await store.try_acquire(holder, 5.0)
        assert epoch is not None
        async with store.leader_session(holder, epoch) as session:
            for index, dependency in enumerate(DEPENDENCIES):
                new, updated, admissions = jobs_of(dependency, 100 * (index + 1))
                await session.write_tick(1.0, new, [], [])
                await session.write_tick(
                    20.0, [], updated, admissions, gates=[gate(dependency)], adaptive=[adaptive(dependency)]
                )
        everything = await store.snapshot(admissions_since=0.0, budget_since=0.0)
        mine = await store.snapshot(admissions_since=0.0, budget_since=0.0, only={"a", "c"})
        none = await store.snapshot(admissions_since=0.0, budget_since=0.0, only=set())
        later = await store.snapshot(admissions_since=215.0, budget_since=315.0, only=["b", "c"])
    finally:
        await store.close()
    # One leader still reads every dependency's rows, of each kind.
    assert {job.dependency for job in everything.jobs} == set(DEPENDENCIES)
    assert {entry.dependency for entry in everything.backlog} == set(DEPENDENCIES)
    assert set(everything.admissions) == set(everything.budget_admissions) == set(DEPENDENCIES)
    assert (
        {g.dependency for g in everything.gates}
        == {s.dependency for s in everything.adaptive}
        == set(DEPENDENCIES)
    )
    # A member reads the same rows for its own dependencies, in the same order, and no other's:
    # held jobs, backlogs, both windows' admissions, circuits and pauses, adaptive limits.
    assert mine == restricted(everything, {"a", "c"})
    assert [job.job_id for job in mine.jobs] == ["a-0", "a-1", "c-0", "c-1"]
    assert {(e.dependency, e.scope, e.waiting) for e in mine.backlog} == {
        ("a", "s0", 1), ("a", "s1", 1), ("c", "s0", 1), ("c", "s1", 1),
    }  # fmt: skip
    # Its seq floor is its own dependencies' (b's 2xx are not its to follow).
    assert mine.max_seq == 303
    assert none == restricted(everything, set())  # a member leading nothing reads nothing
    # The windows' bounds still apply with the filter: b's admissions at 210 are before 215.
    assert set(later.admissions) == {"c"}
    assert set(later.budget_admissions) == set()
    assert {job.dependency for job in later.jobs} == {"b", "c"}
