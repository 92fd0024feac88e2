"""Failover with whole `janus run` processes against real services: kill -9 with a standby,
a paused leader, processes with identical configuration, and restarts of RabbitMQ and of
PostgreSQL mid-stream (private instances: the shared ones are never restarted).

Each test judges the run with the shared checker (`janus.audit.audit_database`: the
workers' records and the job table) and prints the times it measured.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from janus.client import Producer, ReadyJob, Worker
from tests.integration.harness import RecordLog, wait_for_states
from tests.system.janus_process import DEFAULT_TIMINGS, FAST_TIMINGS, JanusProcess
from tests.system.judge import (
    MakeJanus,
    assert_one_epoch_at_a_time,
    epoch_history,
    first_admitting,
    http_get,
    judge,
    outputs,
)
from tests.system.private_services import PrivatePostgres, PrivateRabbitMQ, free_port

pytestmark = pytest.mark.system

CONFIG = """
database_url = "{database}"
amqp_url = "{amqp}"

[dependencies.api]
rate_limits = ["40/1s", "100/3s"]
concurrency = 8
lease_timeout = "{lease}"
admission_ttl = "0.5s"

[dependencies.api.retry]
base_delay = "0.1s"
max_delay = "0.5s"
max_attempts = 20

[dependencies.slow]
concurrency = 3
lease_timeout = "{lease}"
admission_ttl = "0.5s"

[dependencies.slow.retry]
base_delay = "0.1s"
max_delay = "0.5s"
max_attempts = 20
"""


def write_config(tmp_path: Path, database: str, amqp: str, lease: str = "3s") -> Path:
    """`lease`: the jobs' lease_timeout. Short, so that admissions a killed leader committed but
    never published come back soon; long where nothing should time out."""
    path = tmp_path / "janus.toml"
    path.write_text(CONFIG.format(database=database, amqp=amqp, lease=lease))
    return path


def make_jobs(tag: str, api: int, slow: int) -> list[tuple[str, str, None, str]]:
    jobs = [(f"{tag}-api-{i}", "api", None, f"t{i % 3}") for i in range(api)]
    return jobs + [(f"{tag}-slow-{i}", "slow", None, "default") for i in range(slow)]


class Traffic:
    """Workers and a producer on one broker, and what the workers saw."""

    def __init__(self, amqp: str, seed: int) -> None:
        self.amqp = amqp
        self.log = RecordLog()
        self.submitted: list[str] = []
        self._rng = random.Random(seed)
        self._worker: Worker | None = None

    async def _quick(self, job: ReadyJob) -> None:
        await asyncio.sleep(self._rng.uniform(0.01, 0.08))
        if self._rng.random() < 0.05:
            raise RuntimeError("flaky")

    async def _slow(self, job: ReadyJob) -> None:
        await asyncio.sleep(self._rng.uniform(0.5, 1.2))

    async def start_worker(self) -> None:
        self._worker = Worker(self.amqp, {"api": self._quick, "slow": self._slow}, on_record=self.log.append)
        await self._worker.start()

    async def stop_worker(self) -> None:
        """Drain: running handlers finish and report (as a supervised worker does before a restart)."""
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None

    async def submit(self, jobs: list[tuple[str, str, None, str]]) -> None:
        async with await Producer.connect(self.amqp) as producer:
            await producer.submit_many(jobs, window=50)
        self.submitted.extend(job[0] for job in jobs)

    async def wait_all_done(self, processes: list[JanusProcess], database: str, timeout: float = 60) -> None:
        """Until the workers saw every job succeed and the job table agrees (its last results applied)."""
        expected = set(self.submitted)
        shown = outputs(processes)
        try:
            await self.log.wait_for(lambda _: expected <= self.log.succeeded(), timeout=timeout)
        except TimeoutError:
            missing = sorted(expected - self.log.succeeded())
            pytest.fail(f"{len(missing)} jobs never succeeded, e.g. {missing[:5]}\n{shown}")
        try:
            await wait_for_states(
                database,
                lambda rows: all(rows[j]["state"] in ("succeeded", "dead") for j in expected if j in rows),
                timeout=timeout,
            )
        except TimeoutError:
            pytest.fail(f"the job table never caught up with the workers\n{shown}")


async def test_kill_9_the_leader_at_random_moments_with_a_standby(
    database: str, vhost: str, tmp_path: Path, janus_process: MakeJanus
) -> None:
    """Default timings (3 s lease): every takeover after kill -9 well within 5 s, nothing lost."""
    config_path = write_config(tmp_path, database, vhost)
    first = janus_process(config_path, "first", DEFAULT_TIMINGS)
    second = janus_process(config_path, "second", DEFAULT_TIMINGS)
    processes = [first, second]
    loop = asyncio.get_running_loop()
    await asyncio.gather(first.start(), second.start())
    leader, _ = await first_admitting(processes, float("-inf"), timeout=30)
    traffic = Traffic(vhost, seed=5)
    await traffic.start_worker()
    rng = random.Random(11)
    takeovers = []
    submitting = asyncio.create_task(traffic.submit(make_jobs("k", api=260, slow=12)))
    try:
        for _ in range(3):
            await asyncio.sleep(rng.uniform(0.8, 2.5))  # a random moment, mid-stream
            await leader.kill()
            killed_at = loop.time()
            await leader.start()  # back as a standby, as a supervisor would restart it
            leader, began = await first_admitting(processes, killed_at, timeout=15)
            takeovers.append(began - killed_at)
        await submitting
        await traffic.wait_all_done(processes, database)
    finally:
        await traffic.stop_worker()
        # The standby first: a leader stopped first would hand its lease over to it.
        for process in sorted(processes, key=lambda p: p is leader):
            assert await process.terminate() == 0, process.output()
    print(
        "takeover after kill -9 (lease 3 s, renew 0.75 s, poll 0.5 s): "
        + ", ".join(f"{t:.2f} s" for t in takeovers)
    )
    assert all(t < 5.0 for t in takeovers), takeovers
    await judge(traffic, config_path, database)
    epochs, spans = await epoch_history(database)
    assert len(epochs) == 4
    assert_one_epoch_at_a_time(epochs, spans)


async def test_a_paused_leader_commits_nothing_admits_nothing_and_steps_down(
    database: str, vhost: str, tmp_path: Path, janus_process: MakeJanus
) -> None:
    # A paused leader holds the results delivered to it (unacked) until it wakes or the broker
    # drops its connection; with job leases that outlast the pause, nothing runs twice.
    config_path = write_config(tmp_path, database, vhost, lease="15s")
    old = janus_process(config_path, "old")  # leader lease 2 s
    standby = janus_process(config_path, "standby")
    loop = asyncio.get_running_loop()
    await old.start()
    _, old_epoch = await old.wait_admitting(timeout=30)
    await standby.start()
    await standby.wait_line("standing by as", timeout=30)
    traffic = Traffic(vhost, seed=7)
    await traffic.start_worker()
    submitting = asyncio.create_task(traffic.submit(make_jobs("p", api=150, slow=9)))
    try:
        await traffic.log.wait_for(lambda records: len(records) >= 20, timeout=30)  # mid-stream
        old.signal(signal.SIGSTOP)
        stopped_at, stopped_wall = loop.time(), time.time()
        began, new_epoch = await standby.wait_admitting(timeout=15)
        takeover = began - stopped_at
        # Paused well past its lease; let the new leader admit meanwhile.
        count = len(traffic.log.records)
        await traffic.log.wait_for(lambda records: len(records) >= count + 10, timeout=30)
        resumed_lines = len(old.lines)
        old.signal(signal.SIGCONT)
        resumed_wall = time.time()
        await old.wait_line("standing by as", timeout=30, after=resumed_lines)
        assert old.running, old.output()
        await submitting
        await traffic.wait_all_done([old, standby], database)
    finally:
        await traffic.stop_worker()
        for process in (old, standby):  # the old one stands by: stopped first, it hands nothing over
            assert await process.terminate() == 0, process.output()
    print(
        f"takeover after SIGSTOP of the leader (lease 2 s): {takeover:.2f} s; paused {resumed_wall - stopped_wall:.1f} s"
    )
    why = [line for line in old.lines[resumed_lines:] if "stepping down" in line or "lost the" in line]
    print("the resumed leader: " + (why[0].split(": ", 1)[-1] if why else "?"))
    assert new_epoch > old_epoch
    await judge(traffic, config_path, database)

    connection = await asyncpg.connect(database)
    try:
        admissions = {
            (r["job_id"], r["attempt"]): (r["epoch"], r["admitted_at"])
            for r in await connection.fetch(
                "SELECT job_id, attempt, epoch, admitted_at FROM janus.admissions"
            )
        }
    finally:
        await connection.close()
    old_admissions = [at for epoch, at in admissions.values() if epoch == old_epoch]
    assert old_admissions, "the old leader should have admitted before its pause"
    # Committed nothing once stopped, nor after it woke (the database's clock is this host's).
    assert max(old_admissions) < stopped_wall + 0.05
    assert all(at < resumed_wall for epoch, at in admissions.values() if epoch == old_epoch)
    # Every admission a worker saw was recorded, and none of the old epoch after the pause.
    for record in traffic.log.records:
        epoch, at = admissions[(record.job_id, record.attempt)]
        assert at == pytest.approx(record.admitted_at)
        assert epoch != old_epoch or at < stopped_wall + 0.05
    epochs, spans = await epoch_history(database)
    assert_one_epoch_at_a_time(epochs, spans)


async def test_processes_with_identical_configuration_never_both_lead(
    database: str, vhost: str, tmp_path: Path, janus_process: MakeJanus
) -> None:
    config_path = write_config(tmp_path, database, vhost)
    ports = [free_port() for _ in range(3)]
    processes = [
        janus_process(config_path, f"twin-{i}", {**FAST_TIMINGS, "JANUS_HTTP_PORT": str(port)})
        for i, port in enumerate(ports)
    ]
    await asyncio.gather(*(p.start() for p in processes))  # the same file, the same moment
    leader, _ = await first_admitting(processes, float("-inf"), timeout=30)
    traffic = Traffic(vhost, seed=3)
    await traffic.start_worker()
    try:
        await traffic.submit(make_jobs("twin", api=60, slow=3))
        await traffic.wait_all_done(processes, database)
        for process in processes:
            if process is not leader:
                await process.wait_line("standing by as", timeout=10)
        admitted_by = [p.name for p in processes if p.admitting]
        # Each says what it is over HTTP: the leader and the standbys are all ready.
        for process, port in zip(processes, ports, strict=True):
            role = "leading" if process is leader else "standby"
            status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/readyz")
            assert (status, json.loads(body)["role"]) == (200, role), body
            assert (await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/healthz"))[0] == 200
            _, metrics = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
            assert f"janus_is_leader {1.0 if process is leader else 0.0}" in metrics
    finally:
        await traffic.stop_worker()
        # The standbys first: a leader stopped first hands its lease over to one of them.
        for process in sorted(processes, key=lambda p: p is leader):
            assert await process.terminate() == 0, process.output()
    assert admitted_by == [leader.name], "exactly one process ever admitted"
    identities = {
        line.split("starting as ")[1] for p in processes for line in p.lines if "starting as" in line
    }
    assert len(identities) == 3, "each process has an identity of its own"
    epochs, spans = await epoch_history(database)
    assert epochs == [1]
    assert set(spans) == {1}
    await judge(traffic, config_path, database)


@asynccontextmanager
async def private_rabbitmq() -> AsyncIterator[PrivateRabbitMQ]:
    node = PrivateRabbitMQ()
    try:
        await node.start()
        yield node
    finally:
        await node.destroy()


@asynccontextmanager
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.destroy()


async def test_rabbitmq_restarts_mid_stream(database: str, tmp_path: Path, janus_process: MakeJanus) -> None:
    async with private_rabbitmq() as node:
        config_path = write_config(tmp_path, database, node.url)
        janus = janus_process(config_path, "janus")
        loop = asyncio.get_running_loop()
        await janus.start()
        await janus.wait_admitting(timeout=30)
        traffic = Traffic(node.url, seed=13)
        await traffic.start_worker()
        try:
            await traffic.submit(make_jobs("before", api=100, slow=6))
            await traffic.log.wait_for(lambda records: len(records) >= 40, timeout=30)  # mid-stream
            await traffic.stop_worker()
            await node.stop()
            down_at = loop.time()
            await node.start()
            up_at = loop.time()
            # Janus may be back before our own probe connection: measure from both ends.
            recovered = (await janus.wait_admitting(timeout=30, after=down_at))[0] - up_at
            await traffic.start_worker()
            await traffic.submit(make_jobs("after", api=30, slow=3))
            await traffic.wait_all_done([janus], database)
        finally:
            await traffic.stop_worker()
            assert await janus.terminate() == 0, janus.output()
    print(
        f"RabbitMQ stopped and started in {up_at - down_at:.1f} s; Janus admitting again "
        f"{recovered:.2f} s after the node answered our probe"
    )
    assert any("lost the broker" in line for line in janus.lines), janus.output()
    await judge(traffic, config_path, database)
    epochs, spans = await epoch_history(database)
    assert len(epochs) >= 2
    assert_one_epoch_at_a_time(epochs, spans)


async def _through_a_database_outage(
    database: str,
    vhost: str,
    tmp_path: Path,
    janus_process: MakeJanus,
    *,
    seed: int,
    tag: str,
    outage: Callable[[JanusProcess], Awaitable[None]],
) -> tuple[float, float]:
    """Janus and traffic on `database`; mid-stream, `outage` (it returns once the database is
    back); then every job done and the run judged: nothing lost, no limit exceeded, one epoch
    at a time. Returns (when the outage began, when Janus admitted again), loop times."""
    config_path = write_config(tmp_path, database, vhost)
    janus = janus_process(config_path, "janus")
    loop = asyncio.get_running_loop()
    await janus.start()
    await janus.wait_admitting(timeout=30)
    traffic = Traffic(vhost, seed=seed)
    await traffic.start_worker()
    try:
        submitting = asyncio.create_task(traffic.submit(make_jobs(tag, api=160, slow=6)))
        await traffic.log.wait_for(lambda records: len(records) >= 40, timeout=30)  # mid-stream
        down_at = loop.time()
        await outage(janus)
        admitting = (await janus.wait_admitting(timeout=30, after=down_at))[0]
        await submitting
        await traffic.wait_all_done([janus], database)
    finally:
        await traffic.stop_worker()
        assert await janus.terminate() == 0, janus.output()
    await judge(traffic, config_path, database)
    epochs, spans = await epoch_history(database)
    assert len(epochs) >= 2
    assert_one_epoch_at_a_time(epochs, spans)
    return down_at, admitting


async def test_postgresql_restarts_mid_stream(vhost: str, tmp_path: Path, janus_process: MakeJanus) -> None:
    async with private_postgres() as cluster:
        database = await cluster.create_database("janus")
        up: list[float] = []

        async def restart(janus: JanusProcess) -> None:
            await cluster.stop("fast")
            await janus.wait_line("lost the database", timeout=15)
            # Down until Janus has also failed to reconnect at least once (its backoff path).
            await janus.wait_line("lost the database \\(cannot connect", timeout=15)
            await cluster.start()
            up.append(asyncio.get_running_loop().time())

        down_at, admitting = await _through_a_database_outage(
            database, vhost, tmp_path, janus_process, seed=17, tag="pg", outage=restart
        )
        print(
            f"PostgreSQL down for {up[0] - down_at:.2f} s; admitting again {admitting - up[0]:.2f} s after it "
            "answered again"
        )


async def test_postgresql_primary_fails_over_to_a_synchronous_standby(
    vhost: str, tmp_path: Path, janus_process: MakeJanus
) -> None:
    """operations.md, "a primary switchover": the primary crashes mid-stream and its synchronous
    standby is promoted; Janus's URL names both hosts (libpq's multi-host form, the writable one
    chosen), so its next connection finds the new primary, which has every commit: nothing lost,
    no limit broken across the switch."""
    primary, standby = PrivatePostgres(), PrivatePostgres()
    try:
        await primary.start({"wal_level": "replica"})
        await primary.create_database("janus")
        await standby.clone_as_standby(primary)
        await standby.start()
        # From here every commit waits for the standby's flush: the switch loses no admission.
        await _make_synchronous(primary)
        database = (
            f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/janus"
            "?target_session_attrs=read-write"
        )
        promoted: list[float] = []

        async def switch(janus: JanusProcess) -> None:
            await primary.stop("immediate")  # a crash: no shutdown checkpoint, clients cut off
            await janus.wait_line("lost the database", timeout=15)
            await standby.promote()
            promoted.append(asyncio.get_running_loop().time())

        down_at, admitting = await _through_a_database_outage(
            database, vhost, tmp_path, janus_process, seed=19, tag="ha", outage=switch
        )
        print(
            f"primary crashed, standby promoted {promoted[0] - down_at:.2f} s later; Janus admitting "
            f"again {admitting - down_at:.2f} s after the crash"
        )
    finally:
        await standby.destroy()
        await primary.destroy()


async def _make_synchronous(primary: PrivatePostgres, timeout: float = 30.0) -> None:
    """Commits on the primary wait for any standby's flush, once one streams as synchronous
    (set only now: with no standby yet, every commit would wait for good)."""
    query = "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
    connection = await asyncpg.connect(primary.url())
    try:
        await connection.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        await connection.execute("SELECT pg_reload_conf()")
        async with asyncio.timeout(timeout):
            while True:
                if await connection.fetchval(query) >= 1:
                    return
                await asyncio.sleep(0.1)
    finally:
        await connection.close()
