"""The leader's copy of the recent changes (janus/service/changes.py) against a real PostgreSQL:
the newest 20 first, read when asked, forgotten when the term drains."""

from __future__ import annotations

import asyncio

import pytest

from janus.api.changes import SHOWN, RecentChanges
from janus.service.changes import ChangesReader
from janus.store.repository import Store
from tests.integration.harness import eventually

pytestmark = pytest.mark.integration


async def test_the_copy_is_the_newest_changes_read_when_asked_and_forgotten_at_the_end(database: str) -> None:
    store = await Store.connect(database, application_name="test-recent-changes")
    try:
        await store.migrate()
        policy_log = store.policy_log
        await policy_log.record_version("{}", "carol", "first", lambda newest: "+ a")
        for n in range(SHOWN + 4):
            await policy_log.record_steering(
                dependency="api", kind="pause", lasts=None, actor="alice", reason=f"pause {n}"
            )
        changes = RecentChanges()
        reader = ChangesReader(store, changes)
        draining = asyncio.Event()
        task = asyncio.create_task(reader.run(draining))
        await eventually(lambda: changes.listed() is not None, timeout=10)
        listed = changes.listed()
        assert listed is not None
        assert len(listed) == SHOWN  # the version is older than the newest 20: not among them
        assert [c["reason"] for c in listed] == [f"pause {n}" for n in reversed(range(4, SHOWN + 4))]
        assert all((c["what"], c["actor"], c["applied"]) == ("pause", "alice", False) for c in listed)
        await policy_log.record_steering(
            dependency="api", kind="override", lasts=60.0, concurrency=2, actor="bob", reason="drill"
        )
        reader.wanted()  # what the steerer does once it applied a change
        await eventually(lambda: (changes.listed() or [{}])[0].get("what") == "override", timeout=10)
        newest = (changes.listed() or [])[0]
        assert (newest["detail"], newest["actor"], newest["reason"]) == ("concurrency 2", "bob", "drill")
        draining.set()
        await asyncio.wait_for(task, timeout=10)  # a draining term does not wait for it
        assert changes.listed() is None
    finally:
        await store.close()
