"""Who leads which dependency, read from PostgreSQL (issue 21's operators' side): the store's
view of the members and leases, on the database's clock, against rows that Membership's own
heartbeat, claim, release and leave wrote."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from janus.api.http import serve
from janus.api.metrics import Metrics
from janus.api.status import StatusBoard
from janus.core.assignment import plan
from janus.service.health import Health, Role
from janus.service.owners import OwnersReader
from janus.store.membership import Membership
from tests.unit.test_metrics import free_port, get

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


DEPENDENCIES = ("api", "mail", "push", "sms")


async def follow_plans(membership: Membership, joined: list[uuid.UUID], epochs: dict[str, int]) -> None:
    """Each member does what its plan says (hand over, claim), twice over: what the member loop
    does, without lanes. `epochs` is what each dependency's holder now admits for."""
    for _ in range(2):
        for member in joined:
            decided = plan(await membership.view(DEPENDENCIES), str(member))
            for dependency in decided.release:
                await membership.release(dependency, member, epochs.pop(dependency))
            for dependency in decided.claim:
                epoch = await membership.claim(dependency, member, 30.0)
                if epoch is not None:
                    epochs[dependency] = epoch


def owner_series(metrics: Metrics) -> dict[str, str]:
    """janus_dependency_owner_info as served: dependency -> member."""
    (family,) = metrics.dependency_owner.collect()
    assert all(sample.value == 1 for sample in family.samples)
    return {s.labels["dependency"]: s.labels["member"] for s in family.samples}


async def test_readiness_and_metrics_from_the_rows_members_write(membership: Membership) -> None:
    """A member is ready once it holds its share: before its claims, while it waits for a
    handover, once its row expires, and when its read is stale, it is not."""
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    admitting: dict[str, dict[str, int]] = {str(m): {} for m in (a, b, c)}
    epochs: dict[str, int] = {}
    metrics = {m: Metrics() for m in (a, b, c)}
    readers = {
        m: OwnersReader(
            membership, metrics[m], DEPENDENCIES, member=m, admitting=lambda m=m: admitting[str(m)]
        )
        for m in (a, b, c)
    }
    healths = {}
    for m in (a, b, c):
        healths[m] = Health(identity=m, standby_fresh_within=2.0, member_view=readers[m].member_view)
        healths[m].become(Role.STANDBY)

    async def ready(member: uuid.UUID) -> tuple[bool, dict[str, Any]]:
        # What the member loop would tell: it admits for what it holds, in that epoch.
        held = {d: e for d, e in epochs.items() if d in await holders(member)}
        admitting[str(member)] = held
        await readers[member].read()
        return healths[member].readiness()

    async def holders(member: uuid.UUID) -> set[str]:
        owners = await membership.owners()
        return {o.dependency for o in owners.leases if o.live and o.holder == str(member)}

    ok, body = await ready(a)  # no row yet
    assert not ok
    assert body["mode"] == "member"
    assert body["member"]["detail"] == "its member row is not live in the database"
    for m in (a, b):
        await membership.heartbeat(m, f"host-{str(m)[:4]}", 30.0)
    ok, body = await ready(a)
    assert not ok
    assert body["member"]["detail"].startswith("not yet holding its share")
    assert len(body["member"]["share"]) == 2
    await follow_plans(membership, [a, b], epochs)
    for m in (a, b):
        ok, body = await ready(m)
        assert ok, body
        assert len(body["member"]["held"]) == 2
    # A lane still rebuilding (the process admits for less than its leases): not ready.
    admitting[str(a)] = {}
    ok, body = healths[a].readiness()
    assert not ok
    assert body["member"]["detail"].startswith("not yet admitting for")

    # The metrics, as any process serves them, are the rows'.
    await readers[b].read()
    assert metrics[b].members_live._value.get() == 2
    assert metrics[b].dependencies_unowned._value.get() == 0
    before = owner_series(metrics[b])
    assert before == {o.dependency: o.holder for o in (await membership.owners()).leases}
    assert sorted(before.values()).count(str(a)) == 2

    # A third joins: it waits for the handover (not ready); the others stay ready.
    await membership.heartbeat(c, "host-c", 30.0)
    ok, body = await ready(c)
    assert not ok
    assert body["member"]["detail"].startswith("not yet holding its share")
    assert len(body["member"]["share"]) == 1
    assert (await ready(a))[0]
    assert (await ready(b))[0]
    await follow_plans(membership, [a, b, c], epochs)
    for m in (a, b, c):
        ok, body = await ready(m)
        assert ok, (m, body)
    await readers[b].read()
    after = owner_series(metrics[b])
    assert len(after) == len(DEPENDENCIES), "the old owner's series is removed, not zeroed"
    assert str(c) in after.values()
    assert metrics[b].members_live._value.get() == 3

    # A reader that stopped reading: its last answer ages out of readiness.
    stale = Health(identity=a, standby_fresh_within=0.2, member_view=readers[a].member_view)
    stale.become(Role.STANDBY)
    await readers[a].read()
    assert stale.readiness()[0]
    await asyncio.sleep(0.3)
    ok, body = stale.readiness()
    assert not ok
    assert body["member"]["detail"].startswith("the members were last read")

    # c stops heartbeating: once its row expires on the database's clock it is not ready.
    await membership.heartbeat(c, "host-c", 0.3)
    await asyncio.sleep(0.5)
    ok, body = await ready(c)
    assert not ok
    assert body["member"]["detail"] == "its member row is not live in the database"
    assert body["member"]["heartbeat_age_seconds"] is None
    # Its dependency is now the others' to take, but its lease still runs: whoever it is
    # targeted to waits for it, and is not ready until it has claimed it.
    waiting = [m for m in (a, b) if not (await ready(m))[0]]
    assert len(waiting) == 1
    assert healths[waiting[0]].readiness()[1]["member"]["detail"].startswith("not yet holding its share")


async def test_status_readyz_metrics_and_the_cli_from_the_database(
    membership: Membership, database: str
) -> None:
    """Served over HTTP as `janus run` would (one process of two), then `janus status` reads it."""
    a, b = uuid.uuid4(), uuid.uuid4()
    for m, host in ((a, "node-a"), (b, "node-b")):
        await membership.heartbeat(m, host, 30.0)
    epochs: dict[str, int] = {}
    await follow_plans(membership, [a, b], epochs)
    metrics = Metrics()
    reader = OwnersReader(membership, metrics, DEPENDENCIES, member=a, admitting=lambda: epochs, every=0.1)
    health = Health(identity=a, standby_fresh_within=2.0, member_view=reader.member_view)
    health.become(Role.STANDBY)
    stop = asyncio.Event()
    reading = asyncio.create_task(reader.run(stop))
    loop = asyncio.get_running_loop()
    port = free_port()
    board = StatusBoard(metrics.registry, loop, owners=reader.status)
    server = serve("127.0.0.1", port, metrics.registry, loop, health.readiness, status=board)
    url = f"http://127.0.0.1:{port}"
    try:
        await reader.read()  # the first read, rather than waiting for the loop's
        status, text = await asyncio.to_thread(get, f"{url}/readyz")
        assert status == 200, text
        assert json.loads(text)["member"]["detail"] == "holds its share"
        status, text = await asyncio.to_thread(get, f"{url}/status")
        owners = json.loads(text)["owners"]
        assert {d["dependency"]: d["host"] for d in owners["dependencies"]} == {
            d: ("node-a" if holder == str(a) else "node-b")
            for d, holder in {o.dependency: o.holder for o in (await membership.owners()).leases}.items()
        }
        assert [m["host"] for m in owners["members"]] == ["node-a", "node-b"]
        assert owners["this_member"] == str(a)
        assert owners["unowned"] == []
        status, text = await asyncio.to_thread(get, f"{url}/metrics")
        assert "janus_members_live 2.0" in text
        assert text.count("janus_dependency_owner_info{") == len(DEPENDENCIES)

        command = [sys.executable, "-m", "janus.cli", "status", "--url", url]
        done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "who leads which dependency" in done.stdout
        for dependency in DEPENDENCIES:
            assert dependency in done.stdout
        assert "members (2 live)" in done.stdout
        assert f"{str(a).split('-')[0]} (this process)" in done.stdout
        done = await asyncio.to_thread(
            subprocess.run, [*command, "--json"], capture_output=True, text=True, timeout=60
        )
        assert json.loads(done.stdout)["owners"]["members"][0]["member"] == str(a)

        # The member's share is taken from it (its leases released): /readyz says so at once.
        for dependency, epoch in list(epochs.items()):
            await membership.release(dependency, a, epoch)
        await asyncio.sleep(0.3)
        status, text = await asyncio.to_thread(get, f"{url}/readyz")
        assert status == 503
        assert json.loads(text)["member"]["detail"].startswith("not yet holding its share")
    finally:
        server.close()
        stop.set()
        await reading


async def test_a_failed_read_keeps_the_last_answer_which_ages(database: str) -> None:
    """The database gone: the reader goes on (logging), /status keeps its last answer with its
    age, and a member's readiness fails once that answer is older than the rule allows."""
    pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
    lost = Membership(pool, timeout=1.0)
    a = uuid.uuid4()
    await lost.heartbeat(a, "node-a", 30.0)
    metrics = Metrics()
    reader = OwnersReader(lost, metrics, ("api",), member=a, every=0.05)
    health = Health(identity=a, standby_fresh_within=0.5, member_view=reader.member_view)
    health.become(Role.STANDBY)
    await reader.read()
    assert reader.status() is not None
    await pool.close()
    stop = asyncio.Event()
    reading = asyncio.create_task(reader.run(stop))
    try:
        await asyncio.sleep(0.7)
        assert not reading.done(), "a failed read does not end the reader"
        answer = reader.status()
        assert answer is not None
        assert answer["read_seconds_ago"] >= 0.6
        assert [m["host"] for m in answer["members"]] == ["node-a"]
        ok, body = health.readiness()
        assert not ok
        assert body["member"]["detail"].startswith("the members were last read")
    finally:
        stop.set()
        await reading
