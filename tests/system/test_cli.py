"""The `janus` command as a user runs it: migrate, submit, run, and a clean SIGTERM handover."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from janus.client import Worker
from janus.store.migrate import available_migrations
from tests.integration.harness import RecordLog, succeed
from tests.services import Services
from tests.system.janus_process import JanusProcess
from tests.system.test_crash_restart import write_config

pytestmark = pytest.mark.system


async def janus_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "janus.cli",
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_migrate_builds_a_fresh_database_once(services: Services, tmp_path: Path) -> None:
    name = f"jt_cli_migrate_{os.getpid()}"
    await services.create_database(name, from_template=False)
    try:
        config = write_config(tmp_path, services.pg_dsn(name), "amqp://unused/")
        code, out, err = await janus_cli("migrate", "--config", str(config))
        every = [m.version for m in available_migrations()]
        assert (code, out.strip()) == (0, f"applied migrations: {every}"), err
        code, out, _ = await janus_cli("migrate", "--config", str(config))
        assert (code, out.strip()) == (0, "schema is up to date")
        connection = await asyncpg.connect(services.pg_dsn(name))
        try:
            assert await connection.fetchval("SELECT count(*) FROM janus.schema_migrations") == len(every)
        finally:
            await connection.close()
    finally:
        await services.drop_database(name)


async def test_submit_by_hand_reaches_a_worker(
    database: str, vhost: str, tmp_path: Path, janus_process: Callable[[Path, str], JanusProcess]
) -> None:
    config = write_config(tmp_path, database, vhost)
    janus = janus_process(config, "janus")
    await janus.start()
    log = RecordLog()
    worker = Worker(vhost, {"api": succeed}, on_record=log.append)
    try:
        await janus.wait_leading()
        await worker.start()
        code, out, err = await janus_cli(
            "submit",
            "by-hand",
            "api",
            "--scope",
            "ops",
            "--payload",
            '{"n": 1}',
            env={"JANUS_AMQP_URL": vhost},
        )
        assert code == 0, err
        assert "submitted by-hand to api (scope ops)" in out
        await log.wait_for(lambda _: "by-hand" in log.succeeded(), timeout=20)
    finally:
        await worker.stop()
        assert await janus.terminate() == 0, janus.output()
    (record,) = log.records
    assert record.scope == "ops"


async def test_sigterm_drains_and_hands_the_lease_over_at_once(
    database: str, vhost: str, tmp_path: Path, janus_process: Callable[[Path, str], JanusProcess]
) -> None:
    config = write_config(tmp_path, database, vhost)
    first, second = janus_process(config, "first"), janus_process(config, "second")
    await first.start()
    await first.wait_leading()
    await second.start()
    try:
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        assert await first.terminate() == 0, first.output()
        await second.wait_leading(timeout=10)
        handover = loop.time() - stopped_at
    finally:
        assert await second.terminate() == 0, second.output()
    print(f"handover after SIGTERM: {handover:.2f} s")
    # A released lease is taken at the standby's next poll (0.2 s here), not after expiry (2 s).
    assert handover < 1.5
    assert any("stopping: no new deliveries" in line for line in first.lines)
