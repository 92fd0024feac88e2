"""The HTTP endpoint: the registry it was given, and health checks answered by the event loop."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
import uuid

from janus.api.http import serve
from janus.api.metrics import Metrics
from janus.service.health import Health, Role


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_metrics_and_health_are_served_over_http() -> None:
    metrics = Metrics()
    metrics.admissions.labels("api").inc(3)
    metrics.is_leader.set(1)
    health = Health(identity=uuid.uuid4(), standby_fresh_within=2.0)
    port = free_port()
    server = serve("127.0.0.1", port, metrics.registry, asyncio.get_running_loop(), health.readiness)
    base = f"http://127.0.0.1:{port}"
    try:
        # urllib blocks: ask from a thread while this loop keeps answering the health checks.
        status, text = await asyncio.to_thread(get, f"{base}/metrics")
        assert status == 200
        assert 'janus_admissions_total{dependency="api"} 3.0' in text
        assert "janus_is_leader 1.0" in text
        assert await asyncio.to_thread(get, f"{base}/healthz") == (200, '{"alive": true}\n')
        status, text = await asyncio.to_thread(get, f"{base}/readyz")
        assert (status, json.loads(text)["role"]) == (503, "starting")
        health.become(Role.STANDBY)
        health.polled(True)  # a standby whose database answers is ready
        status, text = await asyncio.to_thread(get, f"{base}/readyz")
        assert (status, json.loads(text)["role"]) == (200, "standby")
        health.become(Role.RECOVERING, detail="lost the broker")
        status, text = await asyncio.to_thread(get, f"{base}/readyz")
        assert (status, json.loads(text)["detail"]) == (503, "lost the broker")
        health.become(Role.LEADING, epoch=7)
        status, text = await asyncio.to_thread(get, f"{base}/readyz")
        assert (status, json.loads(text)["epoch"]) == (200, 7)
        assert (await asyncio.to_thread(get, f"{base}/nope"))[0] == 404
    finally:
        server.close()


def test_a_loop_that_does_not_answer_fails_the_health_checks() -> None:
    metrics = Metrics()
    health = Health(identity=uuid.uuid4(), standby_fresh_within=2.0)
    health.become(Role.LEADING, epoch=1)
    stuck = asyncio.new_event_loop()  # never run: like a loop blocked by a busy callback
    port = free_port()
    server = serve("127.0.0.1", port, metrics.registry, stuck, health.readiness, deadline=0.3)
    try:
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 503
        assert get(f"http://127.0.0.1:{port}/readyz")[0] == 503
        assert get(f"http://127.0.0.1:{port}/metrics")[0] == 200  # a scrape needs no loop
    finally:
        server.close()
        stuck.close()


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.admissions.labels("api").inc()
    assert second.registry.get_sample_value("janus_admissions_total", {"dependency": "api"}) is None
