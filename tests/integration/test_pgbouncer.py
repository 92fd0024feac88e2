"""Janus behind PgBouncer in transaction mode: every transaction may land on another server
connection, so nothing may outlive one. Janus holds its lease in rows, and with
`statement_cache_size=0` in the database URL asyncpg keeps no named prepared statements
(PgBouncer 1.18, this machine's, cannot follow them; 1.21+ can with max_prepared_statements)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from janus.client import Producer, Worker
from janus.store.pooling import connect_options
from tests.integration.harness import RecordLog, job_rows, make_config, running_janus, succeed
from tests.system.rabbit_cluster import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def pgbouncer() -> Iterator[int]:
    """PgBouncer in transaction mode on a free port, in front of 127.0.0.1:5432, with more than
    one server connection per database (so consecutive transactions do change connections)."""
    if shutil.which("pgbouncer") is None:
        message = "no pgbouncer (Debian package pgbouncer; scripts/ensure-tools installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + ": CI=true, so this is a failure, not a skip")
        pytest.skip(message)
    port = free_port()
    base = Path(tempfile.mkdtemp(prefix="janus-pgbouncer-"))
    base.chmod(0o755)  # PgBouncer refuses to run as root: it runs as postgres
    (base / "userlist.txt").write_text('"postgres" ""\n')
    (base / "pgbouncer.ini").write_text(
        f"""[databases]
* = host=127.0.0.1 port=5432
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {base}/userlist.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 50
logfile = {base}/pgbouncer.log
pidfile =
"""
    )
    shutil.chown(base / "userlist.txt", "postgres")
    shutil.chown(base / "pgbouncer.ini", "postgres")
    shutil.chown(base, "postgres")
    process = subprocess.Popen(
        ["runuser", "-u", "postgres", "--", "pgbouncer", str(base / "pgbouncer.ini")],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)


async def through(port: int, database: str) -> str:
    """The database's URL through PgBouncer, without a statement cache; once PgBouncer answers."""
    name = database.rsplit("/", 1)[1]
    url = f"postgresql://postgres@127.0.0.1:{port}/{name}?statement_cache_size=0"
    options = connect_options(url)
    async with asyncio.timeout(10):
        while True:
            try:
                connection = await asyncpg.connect(options.url, statement_cache_size=0)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            await connection.close()
            return url


@pytest.fixture
async def bounced(pgbouncer: int, database: str) -> str:
    return await through(pgbouncer, database)


async def test_janus_runs_behind_pgbouncer_in_transaction_mode(
    bounced: str, database: str, vhost: str
) -> None:
    config = make_config(
        bounced, vhost, {"api": {"rate_limits": ["50/1s"], "concurrency": 4, "lease_timeout": "10s"}}
    )
    log = RecordLog()
    jobs = [(f"job-{i}", "api", None, f"t{i % 3}") for i in range(120)]
    async with running_janus(config):
        worker = Worker(vhost, {"api": succeed}, on_record=log.append)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many(jobs)
        await log.wait_for(lambda _: len(log.succeeded()) == len(jobs), timeout=60)
        await worker.stop()
    rows = await job_rows(database)
    assert {row["state"] for row in rows.values()} == {"succeeded"}
    assert len(rows) == len(jobs)


def test_the_statement_cache_option_is_taken_out_of_the_url() -> None:
    options = connect_options("postgresql://u@h:6432/janus?sslmode=disable&statement_cache_size=0")
    assert options.statement_cache_size == 0
    assert options.url == "postgresql://u@h:6432/janus?sslmode=disable"
    assert connect_options("postgresql://u@h/janus").statement_cache_size is None
    with pytest.raises(ValueError, match="whole number"):
        connect_options("postgresql://u@h/janus?statement_cache_size=many")
