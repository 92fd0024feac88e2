"""A flood of /scopes clients against a leader with many scopes: admissions go on, the lease holds.

Issue 20 found 16 clients looping on `GET /scopes?top=1000` against a leader with 50,000
scopes stopped admissions for 19 s and ended two terms with `lease_lost`. Here a `janus run`
with a short lease (2 s, renewed every 0.3 s) holds many scopes of a dependency nobody works
on, a flooder process (benchmarks/inspection_flood.py) runs 16 such clients, and meanwhile
jobs of another dependency are published: each must reach the worker, in the same term.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from janus.client import Producer, ReadyJob, Worker
from tests.integration.harness import eventually
from tests.system.janus_process import FAST_TIMINGS, JanusProcess
from tests.system.private_services import free_port

pytestmark = pytest.mark.system

SCOPES = 20_000  # of the waiting dependency, one job each
JOBS = 200  # of the worked dependency, published while the flood runs
CLIENTS = 16
ROOT = Path(__file__).resolve().parents[2]


def backlog_scopes(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/scopes?dependency=backlog&top=1", timeout=10) as response:
            return int(json.load(response)["dependencies"][0]["eligible_scopes"])
    except OSError:
        return -1


async def test_a_scopes_flood_neither_stops_admissions_nor_costs_the_lease(
    vhost: str, database: str, tmp_path: Path, janus_process: Callable[..., JanusProcess]
) -> None:
    config = tmp_path / "janus.toml"
    config.write_text(
        f'database_url = "{database}"\namqp_url = "{vhost}"\n'
        '[dependencies.api]\nlease_timeout = "60s"\nadmission_ttl = "30s"\n'
        '[dependencies.backlog]\nlease_timeout = "60s"\n'
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    janus = janus_process(config, "janus", {**FAST_TIMINGS, "JANUS_HTTP_PORT": str(port)})
    await janus.start()
    _, epoch = await janus.wait_admitting(timeout=30)
    async with await Producer.connect(vhost) as producer:
        await producer.submit_many((f"b-{i}", "backlog", None, f"tenant-{i}") for i in range(SCOPES))
    # Polled: the count lives in the other process (and nothing else runs here yet).
    await eventually(lambda: backlog_scopes(url) >= SCOPES, timeout=120, every=0.5)

    received: dict[str, float] = {}
    all_received = asyncio.Event()

    async def work(job: ReadyJob) -> None:
        received[job.job_id] = time.time()
        if len(received) == JOBS:
            all_received.set()

    flooder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.inspection_flood",
        "flooder",
        "--url",
        url,
        "--clients",
        str(CLIENTS),
        cwd=ROOT,
        env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE,
    )
    assert flooder.stdout is not None
    try:
        assert await asyncio.wait_for(flooder.stdout.readline(), 30) == b"ready\n"
        flood_began = time.time()
        async with Worker(vhost, {"api": work}), await Producer.connect(vhost) as producer:
            for i in range(JOBS):  # paced, so that admissions are needed all along the flood
                await producer.submit(f"api-{i}", "api")
                await asyncio.sleep(0.02)
            await asyncio.wait_for(all_received.wait(), timeout=120)
        flooder.send_signal(signal.SIGTERM)
        report = json.loads(await asyncio.wait_for(flooder.stdout.readline(), 30))
    finally:
        if flooder.returncode is None:
            flooder.kill()
        await flooder.wait()
    print(report, f"largest gap between jobs at the worker: {largest_gap(received):.2f} s")
    # The flood was served all along (from snapshots; beyond 4 at once, 429), and the jobs went
    # through it: every one reached the worker while it ran, in the term it began in.
    assert report["statuses"].get("200", 0) > 0, report
    assert set(report["statuses"]) <= {"200", "429"}, report
    assert min(received.values()) >= flood_began
    assert [e for _, e in janus.admitting] == [epoch], janus.output()
    assert not [line for line in janus.lines if "lease renewal" in line or "ended:" in line], janus.output()
    assert await janus.terminate() == 0, janus.output()


def largest_gap(received: dict[str, float]) -> float:
    times = sorted(received.values())
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
