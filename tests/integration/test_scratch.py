"""`LocalServices.scratch`, the benchmarks' vhost and database for one run: made, and removed
on the way out even when the run fails."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from janus.local_services import LocalServices

pytestmark = pytest.mark.integration


async def vhosts() -> set[str]:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "list_vhosts", "--no-table-headers", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    return set(out.decode().split())


async def databases() -> set[str]:
    connection = await asyncpg.connect(LocalServices().pg_url("postgres"))
    try:
        return {row["datname"] for row in await connection.fetch("SELECT datname FROM pg_database")}
    finally:
        await connection.close()


async def test_a_scratch_vhost_and_database_are_made_migrated_and_removed_after_a_failure() -> None:
    local = LocalServices()
    seen: list[str] = []

    async def failing_run() -> None:
        async with local.scratch("janus_scratchtest") as scratch:
            seen.append(scratch.name)
            assert scratch.name in await vhosts()
            assert scratch.name in await databases()
            connection = await asyncpg.connect(scratch.database_url)  # the database answers
            await connection.close()
            raise RuntimeError("the run failed")

    with pytest.raises(RuntimeError, match="the run failed"):
        await failing_run()
    [name] = seen
    assert name not in await vhosts()
    assert name not in await databases()
