"""The examples the README shows, run as a reader would run them, against a real `janus run`.

examples/python/quickstart.py is the README's SDK example (the README links it); tasks.py and
submit.py are the README's tour: a worker started from the shell, jobs submitted from a plain
script, then `janus why` and `janus jobs show`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.harness import janus_cli, wait_for_states
from tests.system.janus_process import FAST_TIMINGS, JanusProcess
from tests.system.private_services import free_port

pytestmark = pytest.mark.system

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python"
CONFIG = Path(__file__).resolve().parents[2] / "config" / "janus.toml"


async def start_janus(
    tmp_path: Path, database: str, vhost: str, janus_process: Callable[..., JanusProcess], port: int = 0
) -> JanusProcess:
    """`janus run` on the README's config/janus.toml (payments-api, email), this test's services."""
    config = tmp_path / "janus.toml"
    config.write_text(CONFIG.read_text())
    env = {
        **FAST_TIMINGS,
        "JANUS_DATABASE_URL": database,
        "JANUS_AMQP_URL": vhost,
        "JANUS_HTTP_PORT": str(port),
    }
    janus = janus_process(config, env=env)
    await janus.start()
    await janus.wait_admitting(timeout=20)  # its topology declared: a job published now is routed
    return janus


async def run(*args: str, vhost: str, cwd: Path = EXAMPLES, timeout: float = 90) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env={**os.environ, "JANUS_AMQP_URL": vhost},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_quickstart_runs_and_exits_cleanly(
    database: str, vhost: str, tmp_path: Path, janus_process: Callable[..., JanusProcess]
) -> None:
    await start_janus(tmp_path, database, vhost, janus_process)
    code, out, err = await run(sys.executable, str(EXAMPLES / "quickstart.py"), vhost=vhost)
    assert code == 0, err
    assert out == "charging order 42 for tenant-a, try 1 of 5\n"
    # What a worker left running at exit used to print: "Event loop is closed", "Task was destroyed".
    assert err == "", err


async def test_the_tour_worker_from_the_shell_jobs_from_a_script(
    database: str, vhost: str, tmp_path: Path, janus_process: Callable[..., JanusProcess]
) -> None:
    port = free_port()
    await start_janus(tmp_path, database, vhost, janus_process, port)
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "janus.cli",
        "worker",
        "payments-api=tasks:charge",
        "email=tasks:send_email",
        cwd=EXAMPLES,
        env={**os.environ, "JANUS_AMQP_URL": vhost, "CALL_SECONDS": "0.05"},  # a fast API, for a test
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        code, out, err = await run(sys.executable, "submit.py", "12", vhost=vhost)
        assert code == 0, err
        _, last = out.strip().removeprefix("submitted ").split(" .. ")
        rows = await wait_for_states(
            database,
            lambda rows: len(rows) == 12 and all(r["state"] == "succeeded" for r in rows.values()),
            60,
        )
        # order 10 answered "429, Retry-After" on its first try: Janus retried it.
        (retried,) = [job_id for job_id, row in rows.items() if job_id.endswith("-10")]
        assert rows[retried]["failures"] == 1
        code, out, err = await janus_cli("why", last, "--url", f"http://127.0.0.1:{port}")
        assert (code, out) == (0, f"{last}: succeeded (payments-api, scope tenant-0)\n  not waiting\n"), err
        code, out, err = await janus_cli(
            "jobs", "show", retried, "--config", str(CONFIG), env={"JANUS_DATABASE_URL": database}
        )
        assert code == 0, err
        assert (
            f"{retried}: succeeded; dependency payments-api, scope tenant-1; succeeded on try 2 of 5" in out
        )
        assert ": retry after 2s" in out  # its failed try, in the error history
    finally:
        worker.send_signal(signal.SIGTERM)
        _, worker_err = await asyncio.wait_for(worker.communicate(), 30)
    assert worker.returncode == 0, worker_err.decode()
