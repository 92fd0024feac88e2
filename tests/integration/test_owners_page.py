"""The status page's "who leads which dependency" (scale-out, issue 21) in a real headless
Chromium: the owners read from PostgreSQL rows that members wrote, and updated without a
reload when a member leaves."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from janus.api.http import serve
from janus.api.metrics import Metrics
from janus.api.status import StatusBoard
from janus.service.owners import OwnersReader
from janus.store.membership import Membership
from tests.integration.test_owners import DEPENDENCIES, follow_plans
from tests.integration.test_status_page import DEADLINE_MS, browser_page
from tests.unit.test_metrics import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def membership(database: str) -> AsyncIterator[Membership]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    yield Membership(pool, timeout=5.0)
    await pool.close()


async def test_the_page_shows_who_leads_which_dependency(membership: Membership) -> None:
    from playwright.async_api import expect

    a, b = uuid.uuid4(), uuid.uuid4()
    await membership.heartbeat(a, "node-a", 30.0)
    await membership.heartbeat(b, "node-b", 30.0)
    epochs: dict[str, int] = {}
    await follow_plans(membership, [a, b], epochs)
    held_by_b = sorted(o.dependency for o in (await membership.owners()).leases if o.holder == str(b))
    metrics = Metrics()
    metrics.is_leader.set(1)
    reader = OwnersReader(membership, metrics, DEPENDENCIES, member=a, every=0.2)
    stop = asyncio.Event()
    reading = asyncio.create_task(reader.run(stop))
    loop = asyncio.get_running_loop()
    port = free_port()
    board = StatusBoard(metrics.registry, loop, owners=reader.status)
    server = serve("127.0.0.1", port, metrics.registry, loop, lambda: (True, {}), status=board)
    try:
        await reader.read()
        async with browser_page(f"http://127.0.0.1:{port}") as page:
            await page.wait_for_selector("#owners:not([hidden])", timeout=DEADLINE_MS)
            for dependency in DEPENDENCIES:
                row = await page.locator(f'#owners-list tr[data-dependency="{dependency}"]').inner_text()
                host = "node-b" if dependency in held_by_b else "node-a"
                assert host in row, row
            assert await page.locator("#members-head").inner_text() == "Members (2 live)"
            member_a = await page.locator(f'#members-list tr[data-member="{a}"]').inner_text()
            assert f"{str(a).split('-')[0]} (this process)" in member_a
            member_b = await page.locator(f'#members-list tr[data-member="{b}"]').inner_text()
            assert ", ".join(held_by_b) in member_b

            # b stops: it releases its leases and leaves; the page shows them expired and b gone.
            for dependency in held_by_b:
                await membership.release(dependency, b, epochs[dependency])
            await membership.leave(b)
            await expect(page.locator("#members-head")).to_have_text("Members (1 live)", timeout=DEADLINE_MS)
            row = await page.locator(f'#owners-list tr[data-dependency="{held_by_b[0]}"]').inner_text()
            assert "(gone)" in row
            assert "expired" in row
    finally:
        server.close()
        stop.set()
        await reading
