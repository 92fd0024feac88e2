"""The PostgreSQL adapter against a real database: migrations, the lease and its fence, batches."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from janus.core.decisions import PageRequest
from janus.core.jobs import Admission, Job, JobState
from janus.errors import LeadershipLost, StatementRefused, StoreError
from janus.store.migrate import available_migrations
from janus.store.repository import Store
from tests.services import Services

_seq = iter(range(1, 1_000_000))


def submitted(job_id: str, scope: str = "s", payload: str | None = None) -> tuple[Job, str | None]:
    job = Job(job_id=job_id, dependency="api", scope=scope, payload=None, seq=next(_seq), eligible_at=1.0)
    return job, payload


pytestmark = pytest.mark.integration


@pytest.fixture
async def empty_database(services: Services) -> AsyncIterator[str]:
    """A database with no schema at all (not copied from the migrated template)."""
    name = f"jt_empty_{uuid.uuid4().hex[:8]}"
    await services.create_database(name, from_template=False)
    yield services.pg_dsn(name)
    await services.drop_database(name)


async def test_migrations_build_the_schema_once_even_when_raced(empty_database: str) -> None:
    stores = [await Store.connect(empty_database) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(store.migrate() for store in stores))
        # The advisory lock serialises them: exactly one applies everything, the others nothing.
        assert sorted(applied, key=len) == [[], [], [m.version for m in available_migrations()]]
        assert await stores[0].migrate() == []
    finally:
        for store in stores:
            await store.close()
    connection = await asyncpg.connect(empty_database)
    try:
        tables = {
            row[0]
            for row in await connection.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'janus'"
            )
        }
    finally:
        await connection.close()
    assert tables == {
        "jobs",
        "admissions",
        "leader",
        "leader_terms",
        "schema_migrations",
        "attempt_errors",
        "dependency_gates",
        "retry_requests",
        "policy_versions",
        "steering",
        "outbox",
        "sent_ticks",
        "adaptive_limits",
        "members",  # 0010: scale-out
        "dependency_leases",
        "dependency_terms",
    }


async def test_one_lease_holder_at_a_time_and_the_fence_stops_a_deposed_leader(database: str) -> None:
    store = await Store.connect(database)
    try:
        first, second = uuid.uuid4(), uuid.uuid4()
        epoch = await store.try_acquire(first, 0.5)
        assert epoch == 1
        assert await store.try_acquire(second, 0.5) is None  # held: the standby waits
        assert await store.renew(first, epoch, 0.5)
        async with store.leader_session(first, epoch) as session:
            assert (await session.write_tick(1.0, [submitted("a")], [], [])).inserted == {"a"}

            await asyncio.sleep(0.6)  # the lease runs out unrenewed (a paused leader)
            second_epoch = await store.try_acquire(second, 5.0)
            assert second_epoch == 2
            assert not await store.renew(first, epoch, 0.5), "a deposed leader cannot renew"
            with pytest.raises(LeadershipLost):
                await session.write_tick(2.0, [submitted("b")], [], [])
        with pytest.raises(LeadershipLost):
            async with store.leader_transaction(first, epoch) as tx:
                await tx.prune_admissions(0.0)
        await store.release(second, second_epoch)
        assert await store.try_acquire(first, 5.0) == 3, "released: taken at once, in a new epoch"
        snapshot = await store.snapshot(admissions_since=0.0, budget_since=0.0)
    finally:
        await store.close()
    assert [(b.scope, b.waiting) for b in snapshot.backlog] == [("s", 1)], (
        "the deposed leader's write never landed"
    )


async def test_a_takeover_waits_for_the_leaders_open_transaction(database: str) -> None:
    """The fence locks the lease row: a takeover cannot commit between our check and our commit."""
    store = await Store.connect(database)
    try:
        leader, standby = uuid.uuid4(), uuid.uuid4()
        epoch = await store.try_acquire(leader, 0.3)
        assert epoch is not None
        takeover: asyncio.Task[int | None] | None = None
        async with store.leader_transaction(leader, epoch) as tx:
            await asyncio.sleep(0.4)  # the lease expires while the transaction is open
            takeover = asyncio.create_task(store.try_acquire(standby, 5.0))
            await asyncio.sleep(0.2)
            assert not takeover.done(), "the takeover must wait for the fenced transaction"
            await tx.prune_admissions(0.0)
        assert await takeover == 2
    finally:
        await store.close()


async def test_batches_round_trip_through_the_tables(database: str) -> None:
    store = await Store.connect(database)
    try:
        holder = uuid.uuid4()
        epoch = await store.try_acquire(holder, 5.0)
        assert epoch is not None
        async with store.leader_session(holder, epoch) as tx:
            written = await tx.write_tick(
                100.0,
                [
                    submitted("x", "t1", '{"n": 1}'),
                    submitted("y", "t2"),
                ],
                [],
                [],
            )
            assert written.inserted == {"x", "y"}
            repeat_admitted = Job(
                job_id="x",
                dependency="api",
                scope="t9",
                payload=2,
                state=JobState.ADMITTED,
                attempt=1,
                admitted_at=101.0,
                expires_at=102.0,
                lease_deadline=110.0,
            )
            repeat_admission = Admission.of(repeat_admitted)
            stored = (await tx.write_tick(101.0, [(repeat_admitted, "2")], [], [repeat_admission])).inserted
            assert stored == set(), (
                "the first publication of a job_id wins, and a repeat's admission is not kept"
            )
            admitted = Job(
                job_id="x",
                dependency="api",
                scope="t1",
                payload={"n": 1},
                state=JobState.ADMITTED,
                attempt=1,
                eligible_at=100.0,
                admitted_at=102.0,
                expires_at=103.0,
                lease_deadline=110.0,
            )
            admission = Admission.of(admitted)
            assert (await tx.write_tick(102.0, [], [admitted], [admission])).inserted == set()
            ghost = Job(job_id="ghost", dependency="api", scope="t1", payload=None)
            with pytest.raises(StoreError, match="updated 0 of 1"):
                await tx.write_tick(103.0, [], [ghost], [])
        snapshot = await store.snapshot(admissions_since=101.0, budget_since=50.0)
        assert await store.prune_admissions(holder, epoch, before=101.0) == 0
        assert await store.prune_admissions(holder, epoch, before=102.0) == 1, "admitted_at <= before goes"
        pruned = await store.snapshot(admissions_since=0.0, budget_since=0.0)
    finally:
        await store.close()
    jobs = {job.job_id: job for job in snapshot.jobs}
    assert jobs == {"x": admitted._replace(seq=jobs["x"].seq)}, "first attempts stay in the store"
    (y,) = snapshot.backlog
    assert (y.dependency, y.scope, y.waiting) == ("api", "t2", 1)
    assert snapshot.max_seq == max(jobs["x"].seq, y.max_seq)
    assert snapshot.admissions == {"api": [("t1", 102.0)]}
    assert snapshot.budget_admissions == {"api": [(102.0, False)]}
    assert (pruned.admissions, pruned.budget_admissions) == ({}, {})


async def test_pages_bring_each_scopes_first_attempts_in_seq_order(database: str) -> None:
    store = await Store.connect(database)
    try:
        holder = uuid.uuid4()
        epoch = await store.try_acquire(holder, 5.0)
        assert epoch is not None
        async with store.leader_session(holder, epoch) as session:
            jobs = [submitted(f"{scope}-{n}", scope) for n in range(5) for scope in ("a", "b", "c")]
            await session.write_tick(1.0, jobs, [], [])
            retried = jobs[0][0]._replace(attempt=1, failures=1)  # admitted before: not a first attempt
            await session.write_tick(2.0, [], [retried], [])
            pages = await session.load_pages(
                [
                    PageRequest(dependency="api", scope="a", after_seq=0, limit=3),
                    PageRequest(dependency="api", scope="b", after_seq=jobs[4][0].seq, limit=10),
                    PageRequest(dependency="api", scope="nobody", after_seq=0, limit=10),
                ]
            )
    finally:
        await store.close()
    assert [[job.job_id for job in page] for page in pages] == [
        ["a-1", "a-2", "a-3"],
        ["b-2", "b-3", "b-4"],
        [],
    ]
    assert pages[0][0] == jobs[3][0]


async def test_an_argument_the_driver_cannot_encode_is_refused_for_its_data(database: str) -> None:
    """A value asyncpg cannot send (an attempt beyond PostgreSQL's integer) is StatementRefused:
    the admission loop then retries the batch message by message instead of ending the term."""
    store = await Store.connect(database)
    try:
        holder = uuid.uuid4()
        epoch = await store.try_acquire(holder, 5.0)
        assert epoch is not None
        job, payload = submitted("huge")
        async with store.leader_session(holder, epoch) as session:
            with pytest.raises(StatementRefused, match="invalid input for query argument"):
                await session.write_tick(1.0, [(job._replace(attempt=2**40), payload)], [], [])
            assert (await session.write_tick(1.0, [(job, payload)], [], [])).inserted == {"huge"}, (
                "the session goes on"
            )
    finally:
        await store.close()


async def test_an_unreachable_database_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
        await Store.connect("postgresql://postgres@127.0.0.1:1/janus", timeout=2.0)
