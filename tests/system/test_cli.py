"""The `janus` command as a user runs it: migrate, submit, run, and a clean SIGTERM handover."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from janus.client import Producer, ReadyJob, Worker
from janus.store.migrate import available_migrations
from tests.integration.harness import RecordLog, janus_cli, succeed
from tests.services import Services
from tests.system.janus_process import FAST_TIMINGS, JanusProcess
from tests.system.private_services import free_port
from tests.system.test_crash_restart import write_config

pytestmark = pytest.mark.system


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
    database: str, vhost: str, tmp_path: Path, janus_process: Callable[..., JanusProcess]
) -> None:
    config = write_config(tmp_path, database, vhost)
    # A long lease, so that a handover by expiry could not pass for one by release.
    timings = {**FAST_TIMINGS, "JANUS_LEADER_LEASE": "10", "JANUS_LEADER_RENEW_EVERY": "1"}
    first, second = janus_process(config, "first", timings), janus_process(config, "second", timings)
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
    # A released lease is taken at the standby's next poll (0.2 s here), not after expiry (10 s);
    # the rest is the first process draining and exiting (about 0.3 s on an idle machine).
    assert handover < 5.0
    assert any("stopping: no new deliveries" in line for line in first.lines)


async def test_scopes_and_why_ask_the_leader(
    vhost: str, database: str, tmp_path: Path, janus_process: Callable[..., JanusProcess]
) -> None:
    """No worker at first: nothing is admitted, and both commands say so. Then a worker that
    holds the one slot: the CLI says who waits for what."""
    config = tmp_path / "janus.toml"
    config.write_text(
        f'database_url = "{database}"\namqp_url = "{vhost}"\n'
        '[dependencies.api]\nconcurrency = 1\nlease_timeout = "60s"\nadmission_ttl = "30s"\n'
        '[dependencies.api.fairness]\nweights = { "gold" = 2 }\n'
    )
    port = free_port()
    janus = janus_process(config, "janus", {**FAST_TIMINGS, "JANUS_HTTP_PORT": str(port)})
    await janus.start()
    await janus.wait_admitting(timeout=20)  # its topology declared: a job published now is routed
    url = f"http://127.0.0.1:{port}"
    jobs = [("gold-0", "gold"), ("free-0", "free"), ("gold-1", "gold"), ("gold-2", "gold")]
    async with await Producer.connect(vhost) as producer:
        await producer.submit_many([(job_id, "api", None, scope) for job_id, scope in jobs])

    async def scopes() -> str:
        code, out, err = await janus_cli("scopes", "--url", url)
        assert code == 0, err
        return out

    async def until_scopes_say(text: str) -> str:
        for _ in range(100):  # polled: the answer lives in another process, there is no event to await
            out = await scopes()
            if text in out:
                return out
            await asyncio.sleep(0.2)
        return out

    out = await until_scopes_say("4 ready")
    assert (
        "api: 2 scopes eligible, 4 ready, 0 stored, 0 backing off, 0 held; no worker is consuming janus.ready.api"
        in out
    )
    code, out, err = await janus_cli("why", "gold-2", "--url", url)
    assert code == 0, err
    assert "waits for no_worker: no worker is consuming janus.ready.api" in out
    release = asyncio.Event()

    async def holds(job: ReadyJob) -> None:
        await release.wait()

    worker = Worker(vhost, {"api": holds})
    await worker.start()
    out = await until_scopes_say("3 ready")  # one admitted, three wait
    print(out)
    assert "api: 2 scopes eligible, 3 ready, 0 stored, 0 backing off, 1 held" in out
    assert "concurrency 1" in out  # what blocks the dependency
    code, out, err = await janus_cli("why", "gold-2", "--url", url)
    assert code == 0, err
    assert "gold-2: waiting (api, scope gold)" in out
    assert "waits for concurrency: concurrency 1" in out
    assert "waits for queued: behind 1 earlier jobs of its scope" in out
    code, out, err = await janus_cli("why", "gold-0", "--url", url)
    assert (code, out.strip()) == (0, "gold-0: admitted (api, scope gold)\n  not waiting".strip()), err
    code, _, err = await janus_cli("why", "nobody", "--url", url)
    assert code == 2
    assert "no job 'nobody'" in err
    release.set()
    await worker.stop()
    assert await janus.terminate() == 0


async def test_status_page_token_and_json_logs_of_janus_run(
    vhost: str, database: str, tmp_path: Path, janus_process: Callable[..., JanusProcess]
) -> None:
    """`janus run` as deployed off localhost: its HTTP API behind a token, `janus status` sending
    it, the page at /, and JSON log lines that carry the term's epoch."""
    import json
    import urllib.error
    import urllib.request

    config = tmp_path / "janus.toml"
    config.write_text(
        f'database_url = "{database}"\namqp_url = "{vhost}"\n[dependencies.api]\nconcurrency = 3\n'
    )
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    port = free_port()
    env = {"JANUS_HTTP_PORT": str(port), "JANUS_HTTP_TOKEN_FILE": str(token), "JANUS_LOG_FORMAT": "json"}
    janus = janus_process(config, "janus", {**FAST_TIMINGS, **env})
    await janus.start()
    _, epoch = await janus.wait_admitting(timeout=20)
    url = f"http://127.0.0.1:{port}"

    def get(path: str, authorization: str | None = None) -> tuple[int, str]:
        request = urllib.request.Request(url + path)
        if authorization:
            request.add_header("Authorization", authorization)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, ""

    assert (await asyncio.to_thread(get, "/"))[0] == 401
    assert (await asyncio.to_thread(get, "/healthz"))[0] == 200
    status, page = await asyncio.to_thread(get, "/", "Bearer t0ken")
    assert status == 200
    assert "/static/app.js" in page
    code, out, err = await janus_cli(
        "status", "--json", "--url", url, env={"JANUS_HTTP_TOKEN_FILE": str(token)}
    )
    assert code == 0, err
    body = json.loads(out)
    assert body["process"] == {**body["process"], "leading": True, "epoch": epoch}
    assert [lane["dependency"] for lane in body["dependencies"]] == ["api"]
    assert body["dependencies"][0]["concurrency"] == 3
    code, _, err = await janus_cli("status", "--url", url)
    assert code == 2
    assert "a token is needed" in err
    events = [json.loads(line) for line in janus.lines if line.startswith("{")]
    assert events, janus.lines[:5]
    admitting = next(event for event in events if "admitting as" in event["message"])
    assert admitting["epoch"] == epoch
    assert admitting["level"] == "INFO"


async def test_why_finds_the_exact_job_whatever_its_id(
    vhost: str, database: str, tmp_path: Path, janus_process: Callable[..., JanusProcess]
) -> None:
    """Issue 20: the id was decoded twice: `café-1` found no `cafÃ©-1`, `pct%41-1` found
    `pctA-1`, another job. Each id here is a real job, in a scope of its own name."""
    config = tmp_path / "janus.toml"
    config.write_text(f'database_url = "{database}"\namqp_url = "{vhost}"\n[dependencies.api]\n')
    port = free_port()
    janus = janus_process(config, "janus", {**FAST_TIMINGS, "JANUS_HTTP_PORT": str(port)})
    await janus.start()
    await janus.wait_admitting(timeout=20)
    ids = ["café-1", "pct%41-1", "pctA-1", "a/b", "with space", "q?x#y", "..", "%2F"]
    async with await Producer.connect(vhost) as producer:
        await producer.submit_many([(job_id, "api", None, f"s-{n}") for n, job_id in enumerate(ids)])
    url = f"http://127.0.0.1:{port}"
    try:
        for n, job_id in enumerate(ids):
            for _ in range(100):  # polled: the job reaches the other process's core soon after
                code, out, err = await janus_cli("why", job_id, "--url", url)
                if code == 0:
                    break
                assert f"no job {job_id!r}" in err, err
                await asyncio.sleep(0.1)
            assert (code, out.splitlines()[0]) == (0, f"{job_id}: waiting (api, scope s-{n})"), err
        code, _, err = await janus_cli("why", "pct%42-1", "--url", url)  # would have been pctB-1
        assert (code, err.strip()) == (2, f"janus: {url}: no job 'pct%42-1'")
    finally:
        assert await janus.terminate() == 0, janus.output()
