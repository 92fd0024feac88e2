"""Retention against a real PostgreSQL: pruning removes exactly what janus/core/retention.py
allows (never a waiting, admitted or in-retention job), with the error history; a takeover
in the middle of pruning loses nothing; a dead job revived while a batch runs is kept."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from janus.api.metrics import Metrics
from janus.client import Producer, ReadyJob, Worker
from janus.core.jobs import Job, JobState
from janus.core.retention import BatchSizing, Retention, RetentionPolicy, prunable
from janus.errors import LeadershipLost
from janus.service.leadership import Term
from janus.service.retention import Pruner
from janus.store.repository import Store
from tests.integration.harness import (
    RecordLog,
    eventually,
    janus_cli,
    make_config,
    running_janus,
    wait_for_states,
)

pytestmark = pytest.mark.integration

NOW = 1_000_000.0
RETENTION = Retention(
    default=RetentionPolicy(succeeded=100.0, dead=1000.0, dedup_window=50.0),
    overrides={"audit": RetentionPolicy(succeeded=5000.0, dead=5000.0, dedup_window=5000.0)},
)
DEPENDENCIES = ("api", "audit", "gone")  # "gone": jobs of a dependency no longer configured


@dataclass(frozen=True, kw_only=True, slots=True)
class Row:
    job_id: str
    dependency: str
    state: JobState
    finished_at: float | None
    errors: int  # failed attempts recorded in janus.attempt_errors

    def prunable(self, now: float = NOW) -> bool:
        return prunable(
            RETENTION, state=self.state, dependency=self.dependency, finished_at=self.finished_at, now=now
        )


def random_rows(rng: random.Random, count: int, prefix: str = "j") -> list[Row]:
    rows = []
    for n in range(count):
        state = rng.choice(list(JobState))
        # Around every cutoff: just inside and just past each retention, and far from them.
        ago = rng.choice([0.0, 49.0, 99.0, 100.5, 999.0, 1000.5, 4999.0, 5000.5, 1e5])
        finished = NOW - ago if state.terminal else None
        # A revived dead job is waiting again with no finished_at; a stale one may be left.
        if state is JobState.WAITING and rng.random() < 0.2:
            finished = NOW - 1e5
        rows.append(
            Row(
                job_id=f"{prefix}{n}",
                dependency=rng.choice(DEPENDENCIES),
                state=state,
                finished_at=finished,
                errors=rng.choice([0, 0, 1, 3]),
            )
        )
    return rows


async def insert(database: str, rows: list[Row]) -> None:
    connection = await asyncpg.connect(database)
    try:
        await connection.executemany(
            "INSERT INTO janus.jobs (job_id, dependency, scope, state, attempt, failures, eligible_at,"
            " created_at, finished_at, seq) VALUES ($1, $2, 's', $3, $4, $4, 0, 0, $5,"
            " nextval('seq_for_tests'))",
            [(r.job_id, r.dependency, r.state.value, r.errors, r.finished_at) for r in rows],
        )
        await connection.executemany(
            "INSERT INTO janus.attempt_errors (job_id, attempt, failed_at, error) VALUES ($1, $2, 0, 'boom')",
            [(r.job_id, attempt) for r in rows for attempt in range(1, r.errors + 1)],
        )
    finally:
        await connection.close()


async def stored(database: str) -> tuple[dict[str, str], dict[str, int]]:
    """Every stored job's state, and how many errors each job still has."""
    connection = await asyncpg.connect(database)
    try:
        jobs = {
            r["job_id"]: r["state"] for r in await connection.fetch("SELECT job_id, state FROM janus.jobs")
        }
        errors = {
            r["job_id"]: r["n"]
            for r in await connection.fetch(
                "SELECT job_id, count(*) AS n FROM janus.attempt_errors GROUP BY 1"
            )
        }
    finally:
        await connection.close()
    return jobs, errors


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    connection = await asyncpg.connect(database)
    try:
        await connection.execute("CREATE SEQUENCE seq_for_tests")
    finally:
        await connection.close()
    opened = await Store.connect(database)
    try:
        yield opened
    finally:
        await opened.close()


def pruner(store: Store, term: Term, *, largest: int = 7, metrics: Metrics | None = None) -> Pruner:
    return Pruner(
        store=store,
        term=term,
        retention=RETENTION,
        sizing=BatchSizing(budget=0.05, smallest=1, largest=largest),  # many small batches
        every=60.0,
        metrics=metrics or Metrics(CollectorRegistry()),
        clock=lambda: NOW,
        size=3,
    )


async def lead(store: Store, lease: float = 30.0) -> Term:
    """Take the lease, waiting (with a deadline) for a previous holder's to run out."""
    holder = uuid.uuid4()
    async with asyncio.timeout(10):
        while True:
            epoch = await store.try_acquire(holder, lease)
            if epoch is not None:
                return Term(holder=holder, epoch=epoch, trusted_until=float("inf"))
            await asyncio.sleep(0.05)  # polled: a lease runs out on the database's clock


def expected_after_pruning(rows: list[Row]) -> tuple[dict[str, str], dict[str, int]]:
    kept = [r for r in rows if not r.prunable()]
    return {r.job_id: r.state.value for r in kept}, {r.job_id: r.errors for r in kept if r.errors}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_pruning_removes_exactly_the_finished_jobs_past_their_retention(
    store: Store, database: str, seed: int
) -> None:
    rows = random_rows(random.Random(seed), 300)
    await insert(database, rows)
    term = await lead(store)
    metrics = Metrics(CollectorRegistry())
    pruned = await pruner(store, term, metrics=metrics).prune_once()

    assert pruned == sum(r.prunable() for r in rows) > 0
    assert await stored(database) == expected_after_pruning(rows)
    for state in (JobState.SUCCEEDED, JobState.DEAD):
        counted = metrics.registry.get_sample_value("janus_pruned_jobs_total", {"state": state.value})
        assert counted == sum(r.prunable() and r.state is state for r in rows)
    # Past the default retention, not yet past the audit override's: the oldest left is told.
    oldest_dead = metrics.registry.get_sample_value("janus_oldest_finished_job_seconds", {"state": "dead"})
    assert oldest_dead == max(
        (
            NOW - r.finished_at
            for r in rows
            if r.state is JobState.DEAD and not r.prunable() and r.finished_at
        ),
        default=0.0,
    )
    assert await pruner(store, term).prune_once() == 0, "a second pass finds nothing left"


class PausingStore(Store):
    """A store whose pruning stops between two batches until told to go on: a takeover then."""

    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        super().__init__(pool, timeout)
        self.batches = 0
        self.pause_after = -1
        self.paused = asyncio.Event()
        self.resume = asyncio.Event()

    async def prune_finished(self, *args: object, **kwargs: object) -> int | None:  # type: ignore[override]
        if self.batches == self.pause_after:
            self.paused.set()
            await self.resume.wait()
        self.batches += 1
        return await super().prune_finished(*args, **kwargs)  # type: ignore[arg-type]


@asynccontextmanager
async def pausing_store(database: str, pause_after: int) -> AsyncIterator[PausingStore]:
    opened = await PausingStore.connect(database)
    assert isinstance(opened, PausingStore)
    opened.pause_after = pause_after
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_takeover_during_pruning_loses_nothing(store: Store, database: str) -> None:
    rows = random_rows(random.Random(7), 300)
    await insert(database, rows)
    async with pausing_store(database, pause_after=5) as first_store:
        first = await lead(first_store, lease=0.5)
        task = asyncio.create_task(pruner(first_store, first).prune_once())
        async with asyncio.timeout(10):
            await first_store.paused.wait()  # five batches committed, the sixth not begun
        during, _ = await stored(database)
        gone = [r.job_id for r in rows if r.job_id not in during]
        assert len(gone) >= 5
        assert all(r.prunable() for r in rows if r.job_id in gone)
        second = await lead(store)  # once the first's lease runs out unrenewed (a paused process)
        assert second.epoch == first.epoch + 1
        # The new leader's ticks go on: a job whose id was pruned comes back as a new job; a
        # repeat of a stored finished job is not inserted again (a duplicate).
        pruned_id = gone[0]
        kept_id = next(r.job_id for r in rows if r.state.terminal and not r.prunable())
        async with store.leader_session(second.holder, second.epoch) as session:
            new = (
                await session.write_tick(NOW, [(waiting(pruned_id), None), (waiting(kept_id), None)], [], [])
            ).inserted
        assert new == {pruned_id}
        first_store.resume.set()
        with pytest.raises(LeadershipLost):
            await task  # the deposed leader's next batch commits nothing
        assert first_store.batches == 6, "it stopped at its first batch after the takeover"
    await pruner(store, second).prune_once()
    expected_jobs, expected_errors = expected_after_pruning(rows)
    expected_jobs[pruned_id] = "waiting"  # the new job of that id, not pruned: it is waiting
    assert await stored(database) == (expected_jobs, expected_errors)


def waiting(job_id: str) -> Job:
    return Job(job_id=job_id, dependency="api", scope="s", payload=None, seq=10_000, eligible_at=NOW)


async def test_a_dead_job_revived_while_a_batch_runs_is_kept(store: Store, database: str) -> None:
    rows = [
        Row(job_id="revived", dependency="api", state=JobState.DEAD, finished_at=NOW - 5000, errors=2),
        Row(job_id="old", dependency="api", state=JobState.DEAD, finished_at=NOW - 5001, errors=1),
    ]
    await insert(database, rows)
    term = await lead(store)
    reviving = await asyncpg.connect(database)
    try:
        transaction = reviving.transaction()
        await transaction.start()
        # As revive_dead_jobs does, in a transaction still open while the batch runs.
        await reviving.execute(
            "UPDATE janus.jobs SET state = 'waiting', failures = 0, finished_at = NULL WHERE job_id = 'revived'"
        )
        assert await pruner(store, term).prune_once() == 1  # the locked row is skipped, not waited for
        await transaction.commit()
    finally:
        await reviving.close()
    assert await pruner(store, term).prune_once() == 0
    jobs, errors = await stored(database)
    assert jobs == {"revived": "waiting"}
    assert errors == {"revived": 2}, "its history stays with it"


async def test_a_job_id_is_a_duplicate_until_its_job_is_pruned_and_a_new_job_after(
    database: str, vhost: str
) -> None:
    """Both sides of the window, end to end, with the CLI on what is kept and what is gone: a
    dead job can be retried until pruned, and a pruned job is reported as not stored."""
    config = make_config(
        database,
        vhost,
        {
            "api": {"lease_timeout": "10s", "retry": {"max_attempts": 1}},
            "short": {
                "lease_timeout": "10s",
                "retry": {"max_attempts": 1},
                "retention": {"succeeded": "1s", "dead": "1s", "dedup_window": "1s"},
            },
        },
        # Successes stay 4 s (the repeat below must come within that on a loaded machine),
        # dead jobs of "api" an hour.
        retention={"succeeded": "4s", "dead": "1h", "dedup_window": "4s", "prune_every": "0.1s"},
    )
    log = RecordLog()
    healthy = asyncio.Event()

    async def api(job: ReadyJob) -> None:
        if job.job_id == "doomed" and not healthy.is_set():
            raise RuntimeError("declined")

    async def short(job: ReadyJob) -> None:
        raise RuntimeError("always")

    def runs(job_id: str) -> list[int]:
        return [r.attempt for r in log.records if r.job_id == job_id and r.outcome == "success"]

    async with running_janus(config) as janus:
        worker = Worker(vhost, {"api": api, "short": short}, on_record=log.append)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many(
                [("once", "api", None, "a"), ("doomed", "api", None, "a"), ("gone", "short", None, "a")]
            )
            await log.wait_for(lambda records: len(records) >= 3, timeout=30)
            await producer.submit("once", "api", scope="a")  # within the window: a duplicate
            await eventually(
                lambda: (
                    janus.metrics.registry.get_sample_value(
                        "janus_intake_messages_total", {"outcome": "duplicate"}
                    )
                    == 1
                ),
                timeout=10,
            )
            assert runs("once") == [1]

            code, out, err = await janus_cli("jobs", "show", "doomed", database=database)
            assert code == 0, err
            assert "doomed: dead" in out
            healthy.set()
            code, out, err = await janus_cli("jobs", "retry", "doomed", database=database)
            assert code == 0, err
            assert "made 1 dead job eligible again" in out  # kept an hour: it can be retried

            await wait_for_states(
                database, lambda rows: "once" not in rows and "gone" not in rows, timeout=30
            )
            code, out, err = await janus_cli("jobs", "show", "once", database=database)
            assert code == 0, err  # an answer, not an error
            assert "once: not stored: never submitted, or finished and pruned after its retention" in out
            code, out, err = await janus_cli("jobs", "retry", "gone", database=database)
            assert code == 2
            assert "gone: not stored" in err
            assert "nothing to retry" in err

            await producer.submit("once", "api", scope="a")  # after its job was pruned: a new job
            await log.wait_for(lambda records: len(runs("once")) == 2 and runs("doomed") != [], timeout=30)
        await worker.stop()
    assert runs("once") == [1, 1], "the repeat after pruning ran again, as a new job (attempt 1)"
    pruned = janus.metrics.registry.get_sample_value("janus_pruned_jobs_total", {"state": "succeeded"})
    assert pruned is not None
    assert pruned >= 1


async def test_a_batch_that_cannot_finish_in_time_is_cancelled_and_the_pass_gives_up(
    store: Store, database: str
) -> None:
    """A batch past its statement timeout rolls back (the lease row is not held longer): the
    pruner halves the batch, gives up at the smallest, and prunes it all on a later pass."""
    rows = [
        Row(job_id=f"old{n}", dependency="api", state=JobState.DEAD, finished_at=NOW - 5000, errors=1)
        for n in range(5)
    ]
    await insert(database, rows)
    term = await lead(store)
    metrics = Metrics(CollectorRegistry())
    slow = pruner(store, term, metrics=metrics)
    blocker = await asyncpg.connect(database)
    try:
        async with blocker.transaction():
            # Deleting the error history must wait for this lock: each batch outlives its timeout.
            await blocker.execute("LOCK TABLE janus.attempt_errors IN ACCESS EXCLUSIVE MODE")
            assert await slow.prune_once() == 0
            assert slow.size == 1, "halved down to the smallest batch, then the pass gave up"
            renewed = await store.renew(term.holder, term.epoch, 30.0, timeout=1.0)
            assert renewed, "nothing holds the lease row once the batch was cancelled"
    finally:
        await blocker.close()
    assert await slow.prune_once() == 5
    assert await stored(database) == ({}, {})
    assert metrics.registry.get_sample_value("janus_prune_batch_jobs") is not None


async def test_where_autovacuum_is_off_the_pruner_vacuums_what_it_pruned(store: Store, database: str) -> None:
    rows = [
        Row(job_id=f"old{n}", dependency="api", state=JobState.SUCCEEDED, finished_at=0.0, errors=0)
        for n in range(500)
    ]
    await insert(database, rows)
    term = await lead(store)
    cleaner = pruner(store, term, largest=10_000)
    cleaner.autovacuum = False  # whatever this server says: the stand-in is what is tested
    assert await cleaner.prune_once() == 500

    async def until_dead_rows(holds: Callable[[int], bool]) -> None:
        """Polled: statistics reach pg_stat_user_tables within seconds, with no event to await."""
        async with asyncio.timeout(30):
            while True:
                if holds(sum(churn.dead_rows for churn in await store.table_churn(["jobs"]))):
                    return
                await asyncio.sleep(0.1)

    await until_dead_rows(lambda dead: dead >= 500)
    assert "jobs" in await cleaner.vacuum_if_due()
    await until_dead_rows(lambda dead: dead == 0)
    cleaner.autovacuum = True  # a server that vacuums by itself: the pruner leaves it alone
    assert await cleaner.vacuum_if_due() == []


# The leader's own records: kept RECORDS_KEPT seconds (the longest default retention, dead's).
RECORDS_KEPT = 1000.0


async def insert_records(database: str, current_epoch: int) -> tuple[set[int], set[int]]:
    """Retry requests and leader terms on both sides of the cutoff; the ids and epochs to keep.
    Dated on the pruner's clock (NOW, Unix seconds), as the pruner compares them."""
    requests = [  # (handled seconds ago or None: pending; requested seconds ago)
        *[(RECORDS_KEPT + 1 + n, RECORDS_KEPT + 10 + n) for n in range(20)],  # handled long ago: go
        (RECORDS_KEPT - 1, RECORDS_KEPT + 50),  # requested long ago, handled within: kept
        (None, 1e5),  # pending however old: an operator's request not applied yet
        (1.0, 2.0),
    ]
    connection = await asyncpg.connect(database)
    try:
        keep_requests = set()
        for handled, requested in requests:
            request_id = await connection.fetchval(
                "INSERT INTO janus.retry_requests (job_id, requested_at, handled_at, revived)"
                " VALUES ('x', to_timestamp($1::float8), to_timestamp($2::float8), 0) RETURNING id",
                NOW - requested,
                None if handled is None else NOW - handled,
            )
            if handled is None or handled <= RECORDS_KEPT:
                keep_requests.add(request_id)
        # Terms before the one in force: 20 old ones go, 2 recent ones stay; the term in force
        # (started "long ago" too: a leader that has led for weeks) stays whatever its age.
        terms = [(epoch, RECORDS_KEPT + 100 - epoch) for epoch in range(1, 21)] + [(21, 5.0), (22, 1.0)]
        await connection.executemany(
            "INSERT INTO janus.leader_terms (epoch, holder, started_at)"
            " VALUES ($1, gen_random_uuid(), to_timestamp($2::float8)) ON CONFLICT (epoch) DO NOTHING",
            [(epoch, NOW - ago) for epoch, ago in terms],
        )
        await connection.execute(
            "UPDATE janus.leader_terms SET started_at = to_timestamp($2::float8) WHERE epoch = $1",
            current_epoch,
            NOW - 1e5,
        )
    finally:
        await connection.close()
    return keep_requests, {21, 22, current_epoch}


async def stored_records(database: str) -> tuple[set[int], set[int]]:
    connection = await asyncpg.connect(database)
    try:
        requests = {r[0] for r in await connection.fetch("SELECT id FROM janus.retry_requests")}
        terms = {r[0] for r in await connection.fetch("SELECT epoch FROM janus.leader_terms")}
    finally:
        await connection.close()
    return requests, terms


async def take_epoch(database: str, epoch: int) -> None:
    """Start the lease's epochs after the old terms inserted below, as a long-lived database's are."""
    connection = await asyncpg.connect(database)
    try:
        await connection.execute(
            "INSERT INTO janus.leader VALUES (true, gen_random_uuid(), $1, now() - interval '1 s')", epoch
        )
    finally:
        await connection.close()


async def test_handled_retry_requests_and_ended_terms_are_pruned_past_the_longest_retention(
    store: Store, database: str
) -> None:
    await take_epoch(database, 29)
    term = await lead(store)
    assert term.epoch == 30
    keep_requests, keep_terms = await insert_records(database, term.epoch)
    metrics = Metrics(CollectorRegistry())
    cleaner = pruner(store, term, metrics=metrics)  # batches of 3: several batches of each
    assert await cleaner.prune_records() == 20 + 20
    assert await stored_records(database) == (keep_requests, keep_terms)
    for table in ("retry_requests", "leader_terms"):
        assert metrics.registry.get_sample_value("janus_pruned_records_total", {"table": table}) == 20
    assert await cleaner.prune_records() == 0, "a second pass finds nothing left"


async def test_a_deposed_leader_prunes_no_record(store: Store, database: str) -> None:
    await take_epoch(database, 29)
    first = await lead(store, lease=0.5)
    before = await insert_records(database, first.epoch)
    second = await lead(store)  # once the first's lease runs out unrenewed
    assert second.epoch == first.epoch + 1
    all_requests, all_terms = await stored_records(database)
    with pytest.raises(LeadershipLost):
        await pruner(store, first).prune_records()
    assert await stored_records(database) == (all_requests, all_terms)
    # The new leader prunes them; the deposed term is no longer in force, and dated long ago.
    await pruner(store, second).prune_records()
    assert await stored_records(database) == (before[0], (before[1] - {first.epoch}) | {second.epoch})
