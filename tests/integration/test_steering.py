"""Steering a running Janus live, measured at the workers: `janus apply`, `pause`/`resume`,
`override`, dependencies added and removed, and `janus history`.

The commands run as subprocesses against the test's database, as an operator runs them; Janus
runs in this process (tests/integration/harness.py), and workers record what they received.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from janus.audit import max_in_window
from janus.broker import topology
from janus.client import Producer
from janus.client.worker import ReadyJob, Worker
from janus.service.app import Service
from tests.integration.harness import RecordLog, eventually, janus_cli, make_config, running_janus, succeed

pytestmark = pytest.mark.integration


def policy_file(tmp_path: Path, name: str, dependencies: dict[str, dict[str, Any]]) -> str:
    """A policy file (TOML) with these dependencies; connection settings come from the environment."""
    lines = []
    for dependency, keys in dependencies.items():
        lines.append(f'[dependencies."{dependency}"]')
        lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


async def test_a_pause_stops_admissions_until_resumed(database: str, vhost: str) -> None:
    # A shadow limit rides along: counted, never enforced.
    config = make_config(
        database, vhost, {"api": {"concurrency": 4, "lease_timeout": "10s", "shadow": {"concurrency": 1}}}
    )
    log = RecordLog()

    async def api(job: ReadyJob) -> None:
        await asyncio.sleep(0.02)

    jobs = [f"job-{n}" for n in range(400)]
    async with running_janus(config) as service:
        worker = Worker(vhost, {"api": api}, on_record=log.append, prefetch=4)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([(job, "api", None, "default") for job in jobs])
        await log.wait_for(lambda records: len(records) >= 20, timeout=20)
        code, out, err = await janus_cli(
            "pause", "api", "--reason", "incident 7", "--actor", "alice", database=database
        )
        paused = time.time()
        assert code == 0, err
        assert "the leader applied the pause" in out
        waiting = next(job for job in reversed(jobs) if job not in log.succeeded())
        ok, answer = await service.inspector.why(waiting)
        assert ok
        assert {"reason": "paused", "detail": "paused by alice: incident 7", "until": None} in answer[
            "waits_for"
        ]
        await asyncio.sleep(2.0)  # the behaviour under test: two seconds in which nothing may start
        await eventually(lambda: service.metrics.paused.labels("api")._value.get() == 1, timeout=5)
        ok, body = service.inspector.scopes("api", 1)
        assert ok
        shadow = body["dependencies"][0]["shadow_held_back"]["concurrency 1"]
        assert shadow > 0
        assert service.metrics.shadow_held_back.labels("api", "concurrency 1")._value.get() > 0
        resuming = time.time()
        code, out, err = await janus_cli("resume", "api", database=database)
        resumed = time.time()
        assert code == 0, err
        await log.wait_for(lambda _: len(log.succeeded()) == len(jobs), timeout=60)
        await worker.stop()
    during = [r for r in log.records if paused + 0.5 <= r.received_at < resuming]
    assert during == [], f"{len(during)} admissions received while paused"
    after = min(r.received_at for r in log.records if r.received_at >= resuming)
    print(f"\nfirst admission {after - resumed:+.3f} s after `janus resume` returned")
    assert after <= resumed + 1.0, "admissions resume within a second"
    code, out, err = await janus_cli("history", "--dependency", "api", database=database)
    assert code == 0, err
    assert "pause api  by alice: incident 7  (applied)" in out
    assert "resume api" in out


async def test_apply_lowers_a_rate_for_every_window_after_it_returns(
    database: str, vhost: str, tmp_path: Path
) -> None:
    before = {"api": {"rate_limits": ["20/1s"], "lease_timeout": "10s"}}
    config = make_config(database, vhost, before)
    log = RecordLog()
    jobs = [f"job-{n}" for n in range(300)]
    async with running_janus(config) as service:
        worker = Worker(vhost, {"api": succeed}, on_record=log.append, prefetch=50)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([(job, "api", None, "default") for job in jobs])
        await log.wait_for(lambda records: len(records) >= 30, timeout=20)
        lowered = policy_file(
            tmp_path, "lowered.toml", {"api": {"rate_limits": ["5/1s"], "lease_timeout": "10s"}}
        )
        code, out, err = await janus_cli(
            "apply", "--config", lowered, "--reason", "the API asked", database=database
        )
        applied = time.time()
        assert code == 0, err
        assert "version 2 stored by" in out
        assert '~ dependencies.api.rate_limits: ["20/1s"] -> ["5/1s"]' in out
        assert "the leader applied version 2" in out
        await log.wait_for(lambda records: sum(r.received_at > applied for r in records) >= 20, timeout=30)
        raised = policy_file(
            tmp_path, "raised.toml", {"api": {"rate_limits": ["50/1s"], "lease_timeout": "10s"}}
        )
        raising = time.time()
        code, out, err = await janus_cli("apply", "--config", raised, database=database)
        raised_at = time.time()
        assert code == 0, err
        await log.wait_for(
            lambda records: sum(r.received_at > raised_at + 1.0 for r in records) >= 40, timeout=30
        )
        assert service.metrics.policy_version._value.get() == 3
        await worker.stop()
    starts = sorted(r.started_at for r in log.records if r.started_at is not None)
    lowered_starts = [s for s in starts if applied <= s < raising]
    most = max_in_window(lowered_starts, 1.0)
    print(f"\nat most {most} starts in any 1 s window after apply returned (limit 5/1s, was 20/1s)")
    assert most <= 5
    # A limit admits a window's worth at once, so a one-second slice can fall between two
    # bursts: count from a second after apply returned over two spans of the window (2.2 s),
    # where the old 5/1s would allow at most 15.
    after_raise = [s for s in starts if raised_at + 1.0 <= s < raised_at + 3.2]
    assert len(after_raise) > 15, "raising the limit raises the rate within a second"


async def test_a_dependency_added_removed_and_added_back_loses_nothing(
    database: str, vhost: str, tmp_path: Path
) -> None:
    config = make_config(database, vhost, {"api": {"lease_timeout": "10s"}})
    log = RecordLog()
    with_email = policy_file(
        tmp_path, "with.toml", {"api": {"lease_timeout": "10s"}, "email": {"concurrency": 2}}
    )
    without = policy_file(tmp_path, "without.toml", {"api": {"lease_timeout": "10s"}})
    async with running_janus(config) as service:
        code, out, err = await janus_cli("apply", "--config", with_email, database=database)
        assert code == 0, err
        # Declared before apply returned: a passive declare fails for a queue that does not exist.
        connection = await aio_pika.connect(vhost)
        try:
            channel = await connection.channel()
            await channel.declare_queue(topology.ready_queue("email"), passive=True)
        finally:
            await connection.close()
        worker = Worker(
            vhost,
            {"api": succeed, "email": succeed},
            on_record=log.append,
        )
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit("mail-1", "email")
            await log.wait_for(lambda _: "mail-1" in log.succeeded(), timeout=20)
            code, out, err = await janus_cli("apply", "--config", without, database=database)
            assert code == 0, err
            assert "- dependencies.email.concurrency: 2" in out
            await producer.submit("mail-2", "email")
            await producer.submit("api-1", "api")
            await log.wait_for(lambda _: "api-1" in log.succeeded(), timeout=20)
        await waits_unconfigured_until_added_back(service, log, "mail-2", with_email, database)
        await worker.stop()


async def waits_unconfigured_until_added_back(
    service: Service, log: RecordLog, job_id: str, policy_with_it: str, database: str
) -> None:
    """`job_id`, of a dependency removed from the policy, waits (`unconfigured`) and is not run;
    applying `policy_with_it` adds its dependency back, and it runs."""
    ok, answer = await service.inspector.why(job_id)
    assert ok, answer
    assert answer["waits_for"][0]["reason"] == "unconfigured", answer
    assert job_id not in log.succeeded()
    code, _, err = await janus_cli("apply", "--config", policy_with_it, database=database)
    assert code == 0, err
    await log.wait_for(lambda _: job_id in log.succeeded(), timeout=20)


async def test_an_override_holds_then_reverts_on_time(database: str, vhost: str) -> None:
    config = make_config(database, vhost, {"api": {"concurrency": 6, "lease_timeout": "10s"}})
    log = RecordLog()

    async def api(job: ReadyJob) -> None:
        await asyncio.sleep(0.1)

    jobs = [f"job-{n}" for n in range(250)]
    async with running_janus(config) as service:
        worker = Worker(vhost, {"api": api}, on_record=log.append, prefetch=10)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([(job, "api", None, "default") for job in jobs])
        await log.wait_for(lambda records: len(records) >= 12, timeout=20)
        code, out, err = await janus_cli(
            "override",
            "api",
            "--concurrency",
            "1",
            "--for",
            "6s",
            "--reason",
            "drill",
            "--actor",
            "carol",
            database=database,
        )
        returned = time.time()
        assert code == 0, err
        assert "the leader applied the override" in out, out
        stamp = out.split(" until ")[1].split("Z")[0]
        until = datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp()

        def lane() -> dict[str, Any]:
            ok, body = service.inspector.scopes("api", 5)
            assert ok
            answer: dict[str, Any] = body["dependencies"][0]
            return answer

        assert lane()["steering"]["overridden_by"] == "carol: drill"
        assert lane()["steering"]["override"] == "concurrency 1"
        # Blocked by it whenever its one slot is held (between a result and the next tick, it is not).
        shown = {
            "reason": "concurrency",
            "detail": "concurrency 1 (overridden by carol: drill)",
            "until": None,
        }
        await eventually(lambda: shown in lane()["blocked"], timeout=5)
        await log.wait_for(lambda _: len(log.succeeded()) == len(jobs), timeout=60)
        await worker.stop()

    def held_at(t: float) -> int:
        return sum(
            1 for r in log.records if r.started_at is not None and r.started_at <= t < (r.finished_at or t)
        )

    starts = sorted(r.started_at for r in log.records if r.started_at is not None)
    during = [t for t in starts if returned + 0.5 <= t < until]
    assert during
    assert all(held_at(t) <= 1 for t in during), "at most one at a time under the override"
    reverted = min(t for t in starts if t >= until and held_at(t) > 1)
    print(f"\nthe override reverted {reverted - until:.3f} s after its end (measured at the workers)")
    assert reverted <= until + 0.5, "the override ends on time"


async def test_with_no_leader_a_version_is_pending_and_the_newest_wins_over_the_file(
    database: str, vhost: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[dependencies.api]\nconcurrency = "many"\n', encoding="utf-8")
    code, out, err = await janus_cli("apply", "--config", str(bad), database=database)
    assert code == 2
    assert "dependencies.api.concurrency" in err
    applied = policy_file(tmp_path, "applied.toml", {"api": {"concurrency": 1, "lease_timeout": "10s"}})
    code, out, err = await janus_cli("apply", "--config", applied, "--actor", "dana", database=database)
    assert code == 0, err
    assert "version 1 stored by dana" in out
    assert "no leader is running: version 1 is pending" in out
    code, out, err = await janus_cli("apply", "--config", applied, database=database)
    assert code == 0, err
    assert "the file is version 1, the policy of record: nothing stored" in out
    # Janus starts with a file that says otherwise: the stored version runs, and it says so.
    config = make_config(database, vhost, {"api": {"concurrency": 8, "lease_timeout": "10s"}})
    async with running_janus(config) as service:
        assert service.running is not None
        assert service.running.version == 1
        assert service.metrics.policy_file_differs._value.get() == 1
        assert service.inspector.scheduler is not None
        assert service.inspector.scheduler.policies["api"].concurrency == 1
        code, out, err = await janus_cli("history", database=database)
        assert code == 0, err
        assert "version 1  by dana  (applied)" in out
        assert "the leader runs version 1" in out


async def test_an_override_lowering_a_rate_counts_what_its_window_holds(database: str, vhost: str) -> None:
    config = make_config(database, vhost, {"api": {"rate_limits": ["20/1s"], "lease_timeout": "10s"}})
    log = RecordLog()
    async with running_janus(config):
        worker = Worker(vhost, {"api": succeed}, on_record=log.append, prefetch=50)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([(f"job-{n}", "api", None, "default") for n in range(200)])
        await log.wait_for(lambda records: len(records) >= 30, timeout=20)
        code, out, err = await janus_cli(
            "override", "api", "--rate-limit", "3/1s", "--for", "1m", "--reason", "quota", database=database
        )
        returned = time.time()
        assert code == 0, err
        assert "the leader applied the override" in out
        await log.wait_for(lambda records: sum(r.received_at > returned for r in records) >= 10, timeout=30)
        clearing = time.time()
        code, out, err = await janus_cli("override", "api", "--clear", database=database)
        cleared = time.time()
        assert code == 0, err
        assert "the leader applied the clear" in out
        await log.wait_for(
            lambda records: sum(r.received_at > cleared + 1.0 for r in records) >= 20, timeout=30
        )
        await worker.stop()
    starts = sorted(r.started_at for r in log.records if r.started_at is not None)
    most = max_in_window([s for s in starts if returned <= s < clearing], 1.0)
    print(f"\nat most {most} starts in any 1 s under the override 3/1s (the policy: 20/1s)")
    assert most <= 3
