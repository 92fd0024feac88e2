"""`janus demo`, the README's main command, as a user runs it: a process on the local services.

Two at once must not meet (a vhost each, a database each), and neither may recreate a
database something is still connected to, nor one it did not create (its marker).
"""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from janus.demo import DEMO_MARKER, refuse_database
from tests.services import Services

pytestmark = pytest.mark.integration

DEMO_TIMEOUT = 240.0


async def run_demo(database: str, duration: float = 4.0) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "janus.cli",
        "demo",
        "--duration",
        str(duration),
        "--database",
        database,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=DEMO_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def vhosts() -> set[str]:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "list_vhosts", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    return set(out.decode().split())


@pytest.fixture
async def demo_databases(services: Services) -> AsyncIterator[list[str]]:
    """Names for demo databases, dropped at the end (the demo keeps its database for inspection)."""
    names = [f"jt_demo_{uuid.uuid4().hex[:8]}_{index}" for index in range(2)]
    yield names
    for name in names:
        await services.drop_database(name)


async def test_two_demos_at_once_both_pass_and_leave_no_vhost(demo_databases: list[str]) -> None:
    before = await vhosts()
    results = await asyncio.gather(*(run_demo(name) for name in demo_databases))
    used = []
    for code, out, err in results:
        assert code == 0, f"the demo failed:\n{out[-3000:]}\n{err[-3000:]}"
        assert "PASS: no rate or concurrency limit exceeded" in out
        match = re.search(r"The vhost (\S+) is deleted", out)
        assert match is not None, out[-2000:]
        used.append(match.group(1))
    assert used[0] != used[1], "each demo has a vhost of its own"
    left = {name for name in await vhosts() - before if name.startswith("janus-demo-")}
    assert not left, "the demos' vhosts are deleted"


async def test_a_demo_refuses_a_database_it_did_not_create(
    services: Services, demo_databases: list[str]
) -> None:
    name = demo_databases[0]
    await services.create_database(name)  # anyone's: no connection to it, and no demo's marker
    connection = await asyncpg.connect(services.pg_dsn(name))
    try:
        await connection.execute("CREATE TABLE precious (x int)")
    finally:
        await connection.close()
    code, out, err = await run_demo(name, duration=1.0)
    assert code == 2
    assert (
        err
        == f"janus demo: the database {name} exists and janus demo did not create it: it is left alone; choose another with --database NAME\n"
    )
    assert "The vhost" not in out, "nothing ran"
    connection = await asyncpg.connect(services.pg_dsn(name))
    try:
        assert await connection.fetchval("SELECT count(*) FROM precious") == 0, "untouched"
    finally:
        await connection.close()


async def test_a_demo_recreates_a_database_it_created(services: Services, demo_databases: list[str]) -> None:
    mine, absent = demo_databases
    await services.local.create_database(mine, marker=DEMO_MARKER)  # as an earlier demo left it
    assert await services.local.database_marker(mine) == (True, DEMO_MARKER)
    assert await refuse_database(services.local, mine) is None
    assert await refuse_database(services.local, absent) is None, "a new one: nothing to drop"


async def test_a_demo_refuses_a_database_in_use(services: Services, demo_databases: list[str]) -> None:
    name = demo_databases[0]
    await services.local.create_database(name, marker=DEMO_MARKER)  # an earlier demo's, still in use
    holder = await asyncpg.connect(services.pg_dsn(name))
    try:
        await holder.execute("CREATE TABLE precious (x int)")
        code, _, err = await run_demo(name, duration=1.0)
        assert code == 2
        assert f"the database {name} has 1 open connection(s)" in err
        assert "--database NAME" in err
        # Untouched: the connection lives, and so does what it made.
        assert await holder.fetchval("SELECT count(*) FROM precious") == 0
    finally:
        await holder.close()
