"""The tick of a member term (store/session.py, `fenced`) against a real PostgreSQL: it writes only
while every dependency of the term is still held in its epoch, whatever janus.leader says, and
each admission carries its dependency's epoch; the outbox and "maybe sent" are read per dependency."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from janus.core.jobs import Admission, Job, JobState
from janus.core.outbox import OutboxMessage
from janus.errors import LeadershipLost
from janus.store.membership import Membership
from janus.store.repository import Store

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(database: str) -> AsyncIterator[Store]:
    connected = await Store.connect(database)
    yield connected
    await connected.close()


def admitted(job_id: str, dependency: str, now: float) -> tuple[tuple[Job, str | None], Admission]:
    job = Job(
        job_id=job_id,
        dependency=dependency,
        scope="s",
        payload=None,
        seq=1,
        state=JobState.ADMITTED,
        attempt=1,
        eligible_at=now,
        admitted_at=now,
        expires_at=now + 5,
        lease_deadline=now + 30,
    )
    admission = Admission(
        job_id=job_id,
        dependency=dependency,
        scope="s",
        payload=None,
        attempt=1,
        admitted_at=now,
        expires_at=now + 5,
        lease_deadline=now + 30,
    )
    return (job, None), admission


async def test_a_member_tick_is_fenced_by_its_dependency_leases(store: Store, database: str) -> None:
    membership: Membership = store.membership
    member, other = uuid.uuid4(), uuid.uuid4()
    for who in (member, other):
        await membership.heartbeat(who, "test", 30.0)
    assert await membership.claim("a", member, 30.0) == 1
    assert await membership.claim("b", other, 30.0) == 1
    assert await membership.claim("b", other, 30.0) == 2  # a second take by its holder: a new epoch
    now = time.time()
    # janus.leader is held by nobody: a member's tick does not need it.
    async with store.leader_session(member, 0, fenced={"a": 1}) as session:
        new, admission = admitted("j-a", "a", now)
        assert (await session.write_tick(now, [new], [], [admission])).inserted == {"j-a"}
        assert [row[0] for row in await session.maybe_sent()] == ["j-a"]
    async with store.leader_session(other, 0, fenced={"b": 2}) as session:
        new, admission = admitted("j-b", "b", now)
        outcome = OutboxMessage(id=str(uuid.uuid4()), job_id="j-b", routing_key="b.dead", body=b"{}")
        assert (await session.write_tick(now, [new], [], [admission], outbox=[outcome])).inserted == {"j-b"}
        assert [row[0] for row in await session.maybe_sent()] == ["j-b"], "only its own dependency's"
    # A term that claims more than it holds writes nothing at all.
    async with store.leader_session(member, 0, fenced={"a": 1, "b": 2}) as session:
        new, admission = admitted("j-ab", "a", now)
        with pytest.raises(LeadershipLost, match="b"):
            await session.write_tick(now, [new], [], [admission])
    # The lease of "a" moves on (released, then taken by the other member in epoch 2): the old
    # term's tick is refused, and so is one with the new epoch by the wrong holder.
    await membership.release("a", member, 1)
    assert await membership.claim("a", other, 30.0) == 2
    async with store.leader_session(member, 0, fenced={"a": 1}) as session:
        new, admission = admitted("j-late", "a", now)
        with pytest.raises(LeadershipLost, match="a"):
            await session.write_tick(now, [new], [], [admission])
    async with store.leader_session(member, 0, fenced={"a": 2}) as session:
        with pytest.raises(LeadershipLost):
            await session.write_tick(now, [new], [], [admission])

    connection = await asyncpg.connect(database)
    try:
        rows = await connection.fetch(
            "SELECT job_id, dependency, epoch FROM janus.admissions ORDER BY job_id"
        )
        jobs = await connection.fetch("SELECT job_id FROM janus.jobs ORDER BY job_id")
    finally:
        await connection.close()
    assert [tuple(r) for r in rows] == [("j-a", "a", 1), ("j-b", "b", 2)]
    assert [r[0] for r in jobs] == ["j-a", "j-b"]
    # The outbox's leftovers, by dependency and by when the reading term began.
    assert [m.job_id for m in await store.outbox.unconfirmed_of(["b"], now + 1)] == ["j-b"]
    assert await store.outbox.unconfirmed_of(["a"], now + 1) == []
    assert await store.outbox.unconfirmed_of(["b"], now - 1) == []


async def test_a_claim_waits_for_a_member_tick_in_flight(store: Store, database: str) -> None:
    """The tick locks its lease rows (share) in its transaction: a takeover's claim commits after it."""
    membership = store.membership
    member, other = uuid.uuid4(), uuid.uuid4()
    for who in (member, other):
        await membership.heartbeat(who, "test", 30.0)
    assert await membership.claim("a", member, 0.5) == 1
    connection = await asyncpg.connect(database)
    try:
        async with connection.transaction():
            held = await connection.fetch(
                "SELECT dependency FROM janus.dependency_leases WHERE holder = $1 FOR SHARE", member
            )
            assert [r[0] for r in held] == ["a"]
            await asyncio.sleep(0.6)  # the lease expires while the "tick" is open
            claim = asyncio.create_task(membership.claim("a", other, 30.0))
            await asyncio.sleep(0.3)
            assert not claim.done(), "a claim must wait for the fenced transaction"
        assert await claim == 2
    finally:
        await connection.close()
