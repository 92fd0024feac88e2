"""Members and per-dependency leases (migration 0010, janus/store/membership.py) against a real
PostgreSQL: racing claimers, expiry on the database's clock, the fence after a takeover, a
claim waiting for the old owner's open transaction, and the guard between the global lease of
earlier versions and the dependency leases."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from janus.core.assignment import plan
from janus.errors import LeadershipLost
from janus.store.membership import Membership
from janus.store.repository import Store

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(database, min_size=1, max_size=12)
    yield created
    await created.close()


@pytest.fixture
def membership(pool: asyncpg.Pool) -> Membership:
    return Membership(pool, timeout=5.0)


async def eventually(check: Callable[[], Awaitable[bool]], deadline: float = 5.0) -> None:
    """Poll `check` until it holds, failing after `deadline` seconds."""
    ends = time.monotonic() + deadline
    while not await check():
        assert time.monotonic() < ends, "not within the deadline"
        await asyncio.sleep(0.05)


async def members(membership: Membership, count: int) -> list[uuid.UUID]:
    joined = [uuid.uuid4() for _ in range(count)]
    for member in joined:
        await membership.heartbeat(member, "test-host", 30.0)
    return joined


async def test_racing_claimers_one_wins_each_epoch_once(membership: Membership, pool: asyncpg.Pool) -> None:
    claimers = await members(membership, 8)
    results = await asyncio.gather(*(membership.claim("payments-api", c, 30.0) for c in claimers))
    winners = [c for c, epoch in zip(claimers, results, strict=True) if epoch is not None]
    assert len(winners) == 1
    assert [e for e in results if e is not None] == [1]
    terms = await pool.fetch("SELECT dependency, epoch, holder FROM janus.dependency_terms")
    assert [(r["dependency"], r["epoch"], r["holder"]) for r in terms] == [("payments-api", 1, winners[0])]
    # The others still cannot take it; the winner's renewal keeps it.
    losers = [c for c in claimers if c != winners[0]]
    assert await membership.claim("payments-api", losers[0], 30.0) is None
    assert await membership.renew(winners[0], {"payments-api": 1}, 30.0) == {"payments-api"}
    assert await membership.renew(losers[0], {"payments-api": 1}, 30.0) == set()


async def test_an_expired_lease_is_taken_in_a_new_epoch_and_the_old_owner_is_fenced_out(
    membership: Membership, pool: asyncpg.Pool
) -> None:
    old, new = await members(membership, 2)
    assert await membership.claim("email", old, 0.3) == 1
    async with membership.fenced(old, {"email": 1}) as tx:
        await tx.prune_admissions(0.0)  # a write while it leads
    # The old owner stops renewing (paused); the lease runs out on the database's clock.
    await eventually(lambda: _claimed(membership, "email", new, 30.0))
    epochs = await pool.fetch("SELECT epoch, holder FROM janus.dependency_terms ORDER BY epoch")
    assert [(r["epoch"], r["holder"]) for r in epochs] == [(1, old), (2, new)]
    with pytest.raises(LeadershipLost, match="email"):
        async with membership.fenced(old, {"email": 1}) as tx:
            await tx.prune_admissions(0.0)
    assert await membership.renew(old, {"email": 1}, 30.0) == set(), "a deposed owner cannot renew"
    # Its fenced write does not land; the new owner's does.
    await pool.execute(
        "INSERT INTO janus.admissions (job_id, attempt, dependency, scope, admitted_at, epoch)"
        " VALUES ('old-job', 1, 'email', 's', 1.0, 1)"
    )
    with pytest.raises(LeadershipLost):
        async with membership.fenced(old, {"email": 1}) as tx:
            await tx.prune_admissions(2.0)
    assert await pool.fetchval("SELECT count(*) FROM janus.admissions") == 1
    async with membership.fenced(new, {"email": 2}) as tx:
        assert await tx.prune_admissions(2.0) == 1


async def _claimed(membership: Membership, dependency: str, holder: uuid.UUID, lease: float) -> bool:
    return await membership.claim(dependency, holder, lease) is not None


async def test_a_claim_waits_for_the_old_owners_open_transaction(membership: Membership) -> None:
    """The fence locks the lease row: no claim commits between the old owner's check and its commit."""
    old, new = await members(membership, 2)
    assert await membership.claim("email", old, 0.3) == 1
    async with membership.fenced(old, {"email": 1}) as tx:
        await asyncio.sleep(0.4)  # the lease expires while the transaction is open
        claim = asyncio.create_task(membership.claim("email", new, 30.0))
        await asyncio.sleep(0.3)
        assert not claim.done(), "the claim must wait for the fenced transaction"
        await tx.prune_admissions(0.0)
    assert await claim == 2


async def test_a_release_hands_over_at_once_and_only_the_holders_epoch_releases(
    membership: Membership,
) -> None:
    old, new = await members(membership, 2)
    assert await membership.claim("email", old, 30.0) == 1
    await membership.release("email", new, 1)  # not its lease: nothing happens
    assert await membership.claim("email", new, 30.0) is None
    await membership.release("email", old, 1)
    assert await membership.claim("email", new, 30.0) == 2


async def test_only_a_live_member_claims(membership: Membership) -> None:
    stranger = uuid.uuid4()
    assert await membership.claim("email", stranger, 30.0) is None
    gone = uuid.uuid4()
    await membership.heartbeat(gone, None, 0.2)
    await eventually(lambda: _expired(membership, gone))
    assert await membership.claim("email", gone, 30.0) is None
    await membership.heartbeat(gone, None, 30.0)  # back: it may claim again
    assert await membership.claim("email", gone, 30.0) == 1


async def _expired(membership: Membership, member: uuid.UUID) -> bool:
    view = await membership.view(())
    return all(m.member != str(member) or m.expires_at <= view.now for m in view.members)


async def test_the_view_feeds_the_plan_and_a_leaver_is_gone(membership: Membership) -> None:
    """Three members read one view, claim what their plans say, and end up balanced."""
    dependencies = tuple(f"dep-{i}" for i in range(6))
    joined = await members(membership, 3)
    for _ in range(2):
        for member in joined:
            decided = plan(await membership.view(dependencies), str(member))
            for dependency in decided.claim:
                await membership.claim(dependency, member, 30.0)
    view = await membership.view(dependencies)
    owners = {lease.dependency: lease.holder for lease in view.leases}
    assert set(owners) == set(dependencies)
    assert sorted(list(owners.values()).count(str(m)) for m in joined) == [2, 2, 2]
    assert all(plan(view, str(m)).settled for m in joined)
    await membership.leave(joined[0])
    view = await membership.view(dependencies)
    assert str(joined[0]) not in {m.member for m in view.members}
    assert await membership.prune(0.0) == 0, "live members are never pruned"


async def test_an_earlier_version_and_the_members_never_lead_at_once(
    database: str, membership: Membership
) -> None:
    """Migration 0010's guard: janus.leader's acquire (all an earlier version knows) stands by
    while a member holds a dependency; a member's claim stands by while a non-member leads."""
    store = await Store.connect(database)
    try:
        legacy, member = uuid.uuid4(), (await members(membership, 1))[0]
        assert await membership.claim("email", member, 0.5) == 1
        assert await store.try_acquire(legacy, 0.5) is None, (
            "an earlier version must not lead beside a member"
        )
        # The member takes the global lease as well: it is a member, so it may.
        global_epoch = await store.try_acquire(member, 0.5)
        assert global_epoch is not None
        await store.release(member, global_epoch)
        # The member's lease ends: the earlier version may lead, and then no member may claim.
        await membership.release("email", member, 1)
        legacy_epoch = await store.try_acquire(legacy, 0.5)
        assert legacy_epoch is not None
        assert await membership.claim("email", member, 30.0) is None
        assert await membership.claim("payments-api", member, 30.0) is None
        await store.release(legacy, legacy_epoch)
        assert await membership.claim("email", member, 30.0) == 2
    finally:
        await store.close()


async def test_a_single_leader_without_members_behaves_as_before(database: str) -> None:
    """No member, no dependency lease: janus.leader is taken, renewed and released as today."""
    store = await Store.connect(database)
    try:
        first, second = uuid.uuid4(), uuid.uuid4()
        assert await store.try_acquire(first, 30.0) == 1
        assert await store.try_acquire(second, 30.0) is None
        assert await store.renew(first, 1, 30.0)
        await store.release(first, 1)
        assert await store.try_acquire(second, 30.0) == 2
        assert await store.try_acquire(second, 30.0) == 3, "its own lease, taken back in a new epoch"
    finally:
        await store.close()


async def test_ended_terms_are_pruned_the_one_in_force_never(
    membership: Membership, pool: asyncpg.Pool
) -> None:
    first, second = await members(membership, 2)
    assert await membership.claim("email", first, 30.0) == 1
    await membership.release("email", first, 1)
    assert await membership.claim("email", second, 30.0) == 2
    assert await membership.claim("payments-api", second, 30.0) == 1
    now = await pool.fetchval("SELECT extract(epoch FROM now())::float8")
    assert await membership.prune_terms(now + 60.0, 100) == 1
    rows = await pool.fetch("SELECT dependency, epoch FROM janus.dependency_terms ORDER BY 1, 2")
    assert [(r["dependency"], r["epoch"]) for r in rows] == [("email", 2), ("payments-api", 1)]
    await membership.release("email", second, 2)
    assert await membership.claim("email", first, 30.0) == 3, "epochs stay unique after pruning"
