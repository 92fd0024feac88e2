"""`janus worker` as a user runs it, against a real `janus run`: plain functions and coroutines,
the lease cut-off of a plain function that cannot be stopped, SIGTERM draining, /metrics."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aio_pika
import pytest

from janus.broker import topology
from janus.client import Producer
from tests.integration.harness import eventually, wait_for_states
from tests.system.janus_process import JanusProcess
from tests.system.private_services import free_port

pytestmark = pytest.mark.system

CONFIG = """
database_url = "{database}"
amqp_url = "{amqp}"

[dependencies.plain]
concurrency = 4
lease_timeout = "10s"
admission_ttl = "2s"

[dependencies.coro]
concurrency = 4
lease_timeout = "10s"
admission_ttl = "2s"

# A plain function that runs past its lease: reported failed at the cut-off, never again.
[dependencies.slow]
lease_timeout = "1.5s"
admission_ttl = "1s"
[dependencies.slow.retry]
max_attempts = 1
"""

TASKS = '''
"""Functions a user would write: they know nothing of asyncio or AMQP (but `coro`)."""
import asyncio, json, os, threading, time

OUT = os.environ["TASKS_OUT"]


def note(job, what):
    with open(OUT, "a") as out:
        out.write(json.dumps({"job": job.job_id, "what": what, "try": job.try_number,
                              "thread": threading.current_thread().name}) + "\\n")


def plain(job):
    note(job, "started")
    time.sleep(float(job.payload or 0))
    note(job, "done")


async def coro(job):
    await asyncio.sleep(0.01)
    note(job, "done")


def slow(job):
    note(job, "started")
    time.sleep(3.0)  # past its 1.5 s lease: nothing can stop it
    note(job, "returned")
'''


class WorkerProcess:
    def __init__(self, tmp_path: Path, amqp: str, *args: str) -> None:
        self.tmp_path, self.amqp, self.args = tmp_path, amqp, args
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "janus.cli",
            "worker",
            *self.args,
            cwd=self.tmp_path,  # where tasks.py is, as a user would run it
            env={**os.environ, "JANUS_AMQP_URL": self.amqp, "TASKS_OUT": str(self.out)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())

    @property
    def out(self) -> Path:
        return self.tmp_path / "out.jsonl"

    def notes(self) -> list[dict[str, object]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines()]

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())
            async with self._changed:
                self._changed.notify_all()

    async def wait_line(self, text: str, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: any(text in line for line in self.lines))

    async def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


@pytest.fixture
async def janus_with_tasks(
    database: str, vhost: str, tmp_path: Path, janus_process: Callable[..., JanusProcess]
) -> JanusProcess:
    (tmp_path / "tasks.py").write_text(TASKS)
    config = tmp_path / "janus.toml"
    config.write_text(CONFIG.format(database=database, amqp=vhost))
    janus = janus_process(config)
    await janus.start()
    await janus.wait_leading()
    return janus


async def test_plain_functions_and_coroutines_run_as_workers(
    database: str, vhost: str, tmp_path: Path, janus_with_tasks: JanusProcess
) -> None:
    port = free_port()
    worker = WorkerProcess(
        tmp_path,
        vhost,
        "plain=tasks:plain",
        "coro=tasks:coro",
        "--concurrency",
        "3",
        "--metrics-port",
        str(port),
    )
    await worker.start()
    try:
        await worker.wait_line("worker for plain (tasks:plain, plain function), coro (tasks:coro, coroutine)")
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many(
                [(f"p-{i}", "plain", 0.05, "default") for i in range(6)]
                + [(f"c-{i}", "coro", None, "default") for i in range(6)]
            )
        rows = await wait_for_states(
            database,
            lambda rows: len(rows) == 12 and all(r["state"] == "succeeded" for r in rows.values()),
            30,
        )
        assert all(row["failures"] == 0 for row in rows.values())
        metrics = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
        assert 'janus_worker_jobs_total{dependency="plain",outcome="success"} 6.0' in metrics
        assert 'janus_worker_jobs_total{dependency="coro",outcome="success"} 6.0' in metrics
    finally:
        code = await worker.terminate()
    assert code == 0, "\n".join(worker.lines)
    done = [note for note in worker.notes() if note["what"] == "done"]
    assert sorted(str(note["job"]) for note in done) == sorted(
        [f"p-{i}" for i in range(6)] + [f"c-{i}" for i in range(6)]
    ), "each job ran exactly once"
    assert all(note["try"] == 1 for note in done)
    plain_threads = {note["thread"] for note in done if str(note["job"]).startswith("p-")}
    assert plain_threads
    assert all(str(name).startswith("janus-worker-") for name in plain_threads)
    assert len(plain_threads) <= 3, "no more threads than --concurrency"
    assert {note["thread"] for note in done if str(note["job"]).startswith("c-")} == {"MainThread"}
    assert any("p-0 of plain (try 1, admission 1) done in" in line for line in worker.lines)
    assert any("SIGTERM received" in line for line in worker.lines)


async def test_a_plain_function_past_its_lease_is_reported_once_at_the_cut_off(
    database: str, vhost: str, tmp_path: Path, janus_with_tasks: JanusProcess
) -> None:
    worker = WorkerProcess(tmp_path, vhost, "slow=tasks:slow")
    await worker.start()
    try:
        await worker.wait_line("worker for slow")
        async with await Producer.connect(vhost) as producer:
            await producer.submit("late-1", "slow")
        rows = await wait_for_states(database, lambda rows: rows.get("late-1", {}).get("state") == "dead", 20)
        # Reported by the worker at its cut-off, before the lease ran out (not Janus's "lease timed out").
        assert rows["late-1"]["last_error"] == "handler did not finish within the lease"
        await worker.wait_line("late-1 of slow: the function runs past its lease")
        # Let the function return (a note is written then): the worker must publish nothing for it.
        await eventually(lambda: any(note["what"] == "returned" for note in worker.notes()), 20)
    finally:
        code = await worker.terminate()
    assert code == 0, "\n".join(worker.lines)
    connection = await aio_pika.connect(vhost)
    async with connection:
        channel = await connection.channel()
        rejected = await channel.declare_queue(topology.REJECTED_QUEUE, passive=True)
        assert rejected.declaration_result.message_count == 0, "a second result was published"


async def test_sigterm_lets_a_running_plain_function_finish_and_report(
    database: str, vhost: str, tmp_path: Path, janus_with_tasks: JanusProcess
) -> None:
    worker = WorkerProcess(tmp_path, vhost, "plain=tasks:plain")
    await worker.start()
    try:
        await worker.wait_line("worker for plain")
        async with await Producer.connect(vhost) as producer:
            await producer.submit("long", "plain", 1.5)
        await eventually(lambda: bool(worker.notes()), 20)
    finally:
        code = await worker.terminate()
    assert code == 0, "\n".join(worker.lines)
    assert [note["what"] for note in worker.notes()] == ["started", "done"]
    rows = await wait_for_states(database, lambda rows: rows["long"]["state"] == "succeeded", 10)
    assert rows["long"]["failures"] == 0


@pytest.mark.parametrize(
    ("targets", "complaint"),
    [
        (["api"], "expected DEPENDENCY=module:function, got 'api'"),
        (["api=tasks"], "expected DEPENDENCY=module:function, got 'api=tasks'"),
        (["a b=tasks:f"], "invalid dependency name 'a b'"),
        (["api=no_such_module_here:f"], "cannot import 'no_such_module_here': ModuleNotFoundError"),
        (["api=json:no_such_function"], "module 'json' has no 'no_such_function'"),
        (["api=json:decoder"], "json:decoder is not callable"),
        (["api=json:dumps", "api=json:loads"], "dependency 'api' is given twice"),
    ],
)
async def test_a_wrong_target_is_one_line(targets: list[str], complaint: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "janus.cli",
        "worker",
        *targets,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    (line,) = err.decode().splitlines()
    assert line.startswith("janus: ")
    assert complaint in line
