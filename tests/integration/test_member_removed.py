"""A dependency removed from the policy while Janus runs in member mode (docs/scale-out.md), against
real RabbitMQ and PostgreSQL: as with one leader, a member keeps leading it as a lane that admits
nothing, so the result of a job it holds is applied, a job that arrives for it waits
(`unconfigured`), and adding it back admits that job."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from janus.client import Producer
from janus.client.worker import ReadyJob, Worker
from tests.integration.harness import (
    RecordLog,
    janus_cli,
    make_config,
    running_janus,
    succeed,
    wait_for_states,
)
from tests.integration.test_steering import policy_file, waits_unconfigured_until_added_back

pytestmark = pytest.mark.integration

API = {"lease_timeout": "10s"}
EMAIL = {"concurrency": 2, "lease_timeout": "30s"}


def state(rows: dict[str, Any], job_id: str) -> str | None:
    return rows[job_id]["state"] if job_id in rows else None


async def test_a_removed_dependency_is_still_led_in_member_mode(
    database: str, vhost: str, tmp_path: Path
) -> None:
    config = make_config(database, vhost, {"api": API, "email": EMAIL}, scale_out={"enabled": True})
    with_email = policy_file(tmp_path, "with.toml", {"api": API, "email": EMAIL})
    without = policy_file(tmp_path, "without.toml", {"api": API})
    log = RecordLog()
    release = asyncio.Event()

    async def held_email(job: ReadyJob) -> None:
        await release.wait()  # held by the worker across the version that removes email

    async with running_janus(config) as service:
        worker = Worker(vhost, {"api": succeed, "email": held_email}, on_record=log.append)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit("mail-1", "email")
            await wait_for_states(database, lambda rows: state(rows, "mail-1") == "admitted", timeout=20)
            code, out, err = await janus_cli("apply", "--config", without, database=database)
            assert code == 0, err
            assert "- dependencies.email.concurrency: 2" in out
            release.set()  # its result reaches janus.q.results.email after the version changed
            await log.wait_for(lambda _: "mail-1" in log.succeeded(), timeout=20)
            # Applied by the member leading the removed dependency (nobody read its results before).
            await wait_for_states(database, lambda rows: state(rows, "mail-1") == "succeeded", timeout=20)
            await producer.submit("mail-2", "email")
            await producer.submit("api-1", "api")
            await log.wait_for(lambda _: "api-1" in log.succeeded(), timeout=20)
            await wait_for_states(database, lambda rows: state(rows, "mail-2") == "waiting", timeout=20)
            await waits_unconfigured_until_added_back(service, log, "mail-2", with_email, database)
        await worker.stop()
