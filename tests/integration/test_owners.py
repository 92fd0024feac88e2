"""Who leads which dependency, read from PostgreSQL (issue 21's operators' side): the store's
view of the members and leases, on the database's clock, against rows that Membership's own
heartbeat, claim, release and leave wrote."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from janus.store.membership import Membership

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(database, min_size=1, max_size=6)
    yield created
    await created.close()


@pytest.fixture
def membership(pool: asyncpg.Pool) -> Membership:
    return Membership(pool, timeout=5.0)


async def test_no_members_no_leases_is_an_empty_view(membership: Membership, pool: asyncpg.Pool) -> None:
    owners = await membership.owners()
    assert owners.members == ()
    assert owners.leases == ()
    now = await pool.fetchval("SELECT extract(epoch FROM now())::float8")
    assert abs(owners.now - now) < 5.0


async def test_members_and_leases_as_operators_see_them(membership: Membership, pool: asyncpg.Pool) -> None:
    first, second, gone = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await membership.heartbeat(first, "host-a", 30.0)
    await membership.heartbeat(second, "host-b", 30.0)
    await membership.heartbeat(gone, "host-c", 0.2)
    assert await membership.claim("email", first, 30.0) == 1
    assert await membership.claim("payments-api", second, 30.0) == 1
    assert await membership.claim("sms", gone, 0.2) == 1
    await membership.release("payments-api", second, 1)
    assert await membership.claim("payments-api", first, 30.0) == 2
    await asyncio.sleep(0.5)  # gone's row and lease expire on the database's clock
    await membership.heartbeat(first, "host-a", 30.0)

    owners = await membership.owners()
    assert [(m.member, m.host) for m in owners.members] == [(str(first), "host-a"), (str(second), "host-b")]
    by_member = {m.member: m for m in owners.members}
    assert by_member[str(first)].heartbeat_age < 0.2 < by_member[str(second)].heartbeat_age
    assert all(m.expires_at > owners.now and m.started_at <= owners.now for m in owners.members)

    leases = {o.dependency: o for o in owners.leases}
    assert list(leases) == ["email", "payments-api", "sms"]
    email, payments, sms = leases["email"], leases["payments-api"], leases["sms"]
    assert (email.holder, email.host, email.epoch, email.live, email.holder_live) == (
        str(first),
        "host-a",
        1,
        True,
        True,
    )
    assert (payments.holder, payments.epoch, payments.live) == (str(first), 2, True)
    # The term of epoch 2 began at its claim, after epoch 1's: "since" is the live term's start.
    terms = await pool.fetch(
        "SELECT epoch, extract(epoch FROM started_at)::float8 AS at FROM janus.dependency_terms"
        " WHERE dependency = 'payments-api' ORDER BY epoch"
    )
    assert payments.since == terms[1]["at"] > terms[0]["at"]
    # An expired lease of a member that stopped heartbeating: its host is still known (the row
    # is kept until pruned), neither is live, and "since" is when it expired.
    assert (sms.holder, sms.host, sms.live, sms.holder_live) == (str(gone), "host-c", False, False)
    assert sms.since == sms.expires_at < owners.now

    # The same read is the assignment core's input.
    view = owners.view(("email", "payments-api", "sms"))
    assert {m.member for m in view.members} == {str(first), str(second)}
    assert {(lease.dependency, lease.epoch) for lease in view.leases} == {
        ("email", 1),
        ("payments-api", 2),
        ("sms", 1),
    }

    await membership.leave(second)
    assert [m.member for m in (await membership.owners()).members] == [str(first)]
