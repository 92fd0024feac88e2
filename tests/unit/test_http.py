"""The HTTP server's edges: methods and paths, ids decoded once, /scopes cut from a snapshot
on a budget, at most a few inspections at once, idle connections closed.

The leader side is a real Inspector on a real core (the scheduler is pure); only /why's
store is left out, by an inspector that records which id it was asked.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from janus.api.http import MAX_INSPECTING, MAX_TOP, HttpServer, serve
from janus.api.inspection import Answer, NotLeading, ScopesSnapshot
from janus.api.metrics import Metrics
from janus.api.scopes_cache import ScopesCache
from janus.core.policy import DependencyPolicy
from janus.core.scheduler import Scheduler
from janus.service.health import Health, Role
from janus.service.inspect import Inspector


def request(url: str, method: str = "GET") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def get(url: str, method: str = "GET") -> tuple[int, str]:
    return await asyncio.to_thread(request, url, method)  # urllib blocks; this loop keeps answering


def core(scopes: int) -> Scheduler:
    policy = DependencyPolicy(name="api", lease_timeout=1000.0, admission_ttl=1.0)
    scheduler = Scheduler([policy], random.Random(0))
    for i in range(scopes):
        for j in range(i % 7 + 1):  # backlogs of 1..7 jobs
            scheduler.submit(job_id=f"j-{i}-{j}", dependency="api", scope=f"s{i}", payload=None, now=0.0)
    return scheduler


class Recording:
    """An inspector whose /why answers say which id they were asked; /scopes from `inner`."""

    def __init__(self, inner: Inspector | None = None, gate: asyncio.Event | None = None) -> None:
        self.asked: list[str] = []
        self.all_asked = asyncio.Event()  # set when `expected` questions have come
        self.expected = 0
        self.snapshots = 0
        self.inner = inner
        self.gate = gate
        self.leading = True

    async def snapshot(self) -> ScopesSnapshot:
        self.snapshots += 1
        if self.gate is not None:
            await self.gate.wait()
        if not self.leading or self.inner is None:
            raise NotLeading()
        return await self.inner.snapshot()

    async def why(self, job_id: str) -> Answer:
        self.asked.append(job_id)
        if len(self.asked) == self.expected:
            self.all_asked.set()
        if self.gate is not None:
            await self.gate.wait()
        if not self.leading:
            raise NotLeading()
        if job_id.startswith("nobody"):
            return False, {"error": f"no job {job_id!r}"}
        return True, {"job_id": job_id}


@asynccontextmanager
async def serving(inspector: Any = None, **options: Any) -> AsyncIterator[str]:
    health = Health(identity=uuid.uuid4(), standby_fresh_within=2.0)
    health.become(Role.LEADING, epoch=1)
    server = serve(
        "127.0.0.1",
        0,
        Metrics().registry,
        asyncio.get_running_loop(),
        health.readiness,
        inspector=inspector,
        **options,
    )
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.close()


async def test_unknown_paths_404_and_other_methods_405() -> None:
    async with serving(Recording()) as base:
        assert (await get(f"{base}/healthz"))[0] == 200
        assert (await get(f"{base}/healthz", "HEAD"))[0] == 200
        for method in ("POST", "DELETE", "PUT", "OPTIONS"):
            assert (await get(f"{base}/healthz", method))[0] == 405, method
            assert (await get(f"{base}/scopes", method))[0] == 405, method
        assert (await get(f"{base}/healthz", "FOO"))[0] == 400  # was 200; not an HTTP method at all
        status, text = await get(f"{base}/nope")
        assert (status, text) == (404, "not found: try /metrics, /healthz, /readyz, /scopes or /why/JOB_ID\n")
        assert (await get(f"{base}/why/"))[0] == 404


@pytest.mark.parametrize(
    ("job_id", "path"),
    [
        ("café-1", "caf%C3%A9-1"),  # was decoded twice: cafÃ©-1
        ("pct%41-1", "pct%2541-1"),  # was decoded twice: pctA-1, another job
        ("a/b", "a%2Fb"),  # a slash in an id
        ("with space", "with%20space"),
        ("q?x#y", "q%3Fx%23y"),
        ("a/b", "a/b"),  # unencoded slashes are the id's too
    ],
)
async def test_why_decodes_the_id_once(job_id: str, path: str) -> None:
    inspector = Recording()
    async with serving(inspector) as base:
        status, text = await get(f"{base}/why/{path}")
    assert (status, json.loads(text)) == (200, {"job_id": job_id})
    assert inspector.asked == [job_id]


async def test_why_no_such_job_is_404_and_not_leading_is_503() -> None:
    inspector = Recording()
    async with serving(inspector) as base:
        status, text = await get(f"{base}/why/nobody-1")
        assert (status, json.loads(text)) == (404, {"error": "no job 'nobody-1'"})
        assert (await get(f"{base}/why/caf%FF"))[0] == 400  # not UTF-8
        inspector.leading = False
        status, text = await get(f"{base}/why/any")
        assert (status, json.loads(text)) == (503, {"error": "not the leader: ask the process that leads"})
        status, text = await get(f"{base}/scopes")
        assert (status, json.loads(text)) == (503, {"error": "not the leader: ask the process that leads"})


async def test_scopes_caps_top_pages_with_offset_and_keeps_the_answer_shape() -> None:
    scheduler = core(scopes=5000)
    inspector = Inspector(lambda: 10.0)
    inspector.attach(scheduler, store=None)  # type: ignore[arg-type]  # /scopes never reads the store
    async with serving(Recording(inspector)) as base:
        status, text = await get(f"{base}/scopes?top=1000")
        assert status == 200
        body = json.loads(text)
        (lane,) = body["dependencies"]
        assert len(lane["scopes"]) == MAX_TOP
        assert body["note"] == "top is capped at 200: page on with offset"
        assert (body["top"], body["offset"], body["max_top"]) == (MAX_TOP, 0, MAX_TOP)
        assert {key for key in lane} == {
            "dependency",
            "eligible_scopes",
            "ready",
            "stored",
            "delayed",
            "held",
            "blocked",
            "scopes",
        }
        assert set(lane["scopes"][0]) == {"scope", "waiting", "held", "admitted", "oldest_waiting_seconds"}
        first = lane["scopes"]
        assert [s["waiting"] for s in first] == sorted((s["waiting"] for s in first), reverse=True)
        assert first[0]["waiting"] == 7
        status, text = await get(f"{base}/scopes?top=200&offset=200")
        second = json.loads(text)["dependencies"][0]["scopes"]
        assert not {s["scope"] for s in first} & {s["scope"] for s in second}
        # The same ranking as the core's own, taken in one step.
        direct = [s.scope for s in scheduler.scope_stats("api", top=400)]
        waiting = {s.scope: s.waiting for s in scheduler.scope_stats("api")}
        assert [waiting[s["scope"]] for s in first + second] == [waiting[name] for name in direct]
        assert (await get(f"{base}/scopes?top=x"))[0] == 400
        status, text = await get(f"{base}/scopes?dependency=other")
        assert (status, json.loads(text)) == (404, {"error": "unknown dependency 'other'"})


async def test_a_flood_of_scopes_requests_takes_one_snapshot_per_budget() -> None:
    inspector = Inspector(lambda: 10.0)
    inspector.attach(core(scopes=50), store=None)  # type: ignore[arg-type]
    recording = Recording(inspector)
    async with serving(recording) as base:
        answers = await asyncio.gather(*(get(f"{base}/scopes?top={1 + i % 3}") for i in range(40)))
    assert all(status in (200, 429) for status, _ in answers)
    # MAX_AGE is a second: 40 requests in well under it (or a few, on a slow machine) share snapshots.
    assert recording.snapshots < 10


async def test_more_inspections_at_once_than_the_limit_are_answered_429() -> None:
    gate = asyncio.Event()
    inspector = Recording(gate=gate)
    inspector.expected = MAX_INSPECTING
    async with serving(inspector) as base:
        held = [asyncio.create_task(get(f"{base}/why/job-{i}")) for i in range(MAX_INSPECTING)]
        await asyncio.wait_for(inspector.all_asked.wait(), timeout=10)
        status, text = await get(f"{base}/why/one-more")
        assert status == 429
        assert "retry" in json.loads(text)["error"]
        assert (await get(f"{base}/scopes"))[0] == 429
        assert (await get(f"{base}/healthz"))[0] == 200  # probes are never limited
        gate.set()
        assert [status for status, _ in await asyncio.gather(*held)] == [200] * MAX_INSPECTING
        assert (await get(f"{base}/why/one-more"))[0] == 200


class Counting:
    """A collector that counts how often the registry is encoded."""

    def __init__(self) -> None:
        self.collected = 0

    def collect(self) -> list[Any]:
        self.collected += 1
        return []


async def test_a_flood_of_scrapes_encodes_the_registry_rarely() -> None:
    metrics, counting = Metrics(), Counting()
    metrics.registry.register(counting)  # type: ignore[arg-type]
    health = Health(identity=uuid.uuid4(), standby_fresh_within=2.0)
    server = serve("127.0.0.1", 0, metrics.registry, asyncio.get_running_loop(), health.readiness)
    try:
        base = f"http://127.0.0.1:{server.port}"
        answers = await asyncio.gather(*(get(f"{base}/metrics") for _ in range(40)))
    finally:
        server.close()
    assert {status for status, _ in answers} == {200}
    assert all("janus_is_leader" in text for _, text in answers)
    assert counting.collected < 10  # reused for half a second: 40 scrapes at once, a few encodings


async def test_an_idle_connection_is_closed() -> None:
    async with serving(keepalive_timeout=0.3) as base:
        port = int(base.rsplit(":", 1)[1])
        for opening in (b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"):  # silent, or never finished
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(opening)
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), timeout=10) == b""  # closed by the server
            writer.close()


async def test_a_port_in_use_is_an_error_in_the_caller() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        from aiohttp import web

        with pytest.raises(OSError, match="in use"):
            HttpServer(web.Application(), "127.0.0.1", port).start()


async def test_the_cache_waits_its_budget_after_a_costly_snapshot() -> None:
    now = [0.0]
    taken: list[float] = []

    async def take() -> ScopesSnapshot:
        taken.append(now[0])
        return ScopesSnapshot(taken_at=now[0], cost=0.5, depth=10, lanes={}, scopes={})

    cache = ScopesCache(take, max_age=1.0, budget=0.05, clock=lambda: now[0])
    first = await cache.get()
    now[0] = 2.0  # stale, but 0.5 s of loop at 5 % allows the next only 10 s after the first
    assert (await cache.get()).snapshot is first.snapshot
    now[0] = 10.0
    assert (await cache.get()).snapshot is not first.snapshot
    assert taken == [0.0, 10.0]
