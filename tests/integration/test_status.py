"""`janus status` and GET /status on a running Janus with jobs flowing: every number is the one
/metrics serves; a standby says who leads."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from janus import cli
from janus.api.http import serve
from janus.api.status import StatusBoard
from janus.client import Producer, ReadyJob, Worker
from janus.service.app import Service
from tests.integration.harness import eventually, make_config, running_janus
from tests.unit.test_metrics import free_port, get

pytestmark = pytest.mark.integration

POLICIES = {
    "api": {"rate_limits": ["20/1s"], "concurrency": 4, "admission_ttl": "0.5s", "lease_timeout": "10s"},
    "idle": {"concurrency": 2},
}
JOBS = 120
Sample = tuple[str, tuple[tuple[str, str], ...]]


@asynccontextmanager
async def http(service: Service) -> AsyncIterator[str]:
    """The process's HTTP endpoint, as `janus run` wires it; its base URL."""
    loop = asyncio.get_running_loop()
    registry = service.metrics.registry
    port = free_port()
    board = StatusBoard(registry, loop, service.who_leads)
    server = serve(
        "127.0.0.1", port, registry, loop, service.health.readiness, inspector=service.inspector, status=board
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def fetch(url: str) -> str:
    status, text = await asyncio.to_thread(get, url)
    assert status == 200, text
    return text


def parse(text: str) -> dict[Sample, float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name, tuple(sorted(s.labels.items()))] = s.value
    return samples


async def scrape(registry: CollectorRegistry) -> dict[Sample, float]:
    """What /metrics serves at this moment: the registry's exposition, encoded as /metrics encodes
    it (over HTTP an answer is reused for half a second, which would blur the order of reads)."""
    return parse((await asyncio.to_thread(generate_latest, registry)).decode())


def shown(body: dict[str, Any]) -> Iterator[tuple[str, dict[str, str], float]]:
    """Every number of the status answer with the metric (name, labels) it must come from."""
    for lane in body["dependencies"]:
        d = {"dependency": lane["dependency"]}
        for rate in lane["rates"]:
            yield "janus_rate_limit_count", {**d, "limit": rate["limit"]}, rate["count"]
            yield "janus_rate_limit_window_seconds", {**d, "limit": rate["limit"]}, rate["window_seconds"]
            yield "janus_rate_window_admissions", {**d, "limit": rate["limit"]}, rate["used"]
        if lane["concurrency"] is not None:
            yield "janus_concurrency_limit", d, lane["concurrency"]
        yield "janus_held_slots", d, lane["held"]
        yield "janus_admissions_total", d, lane["admissions_total"]
        yield "janus_oldest_waiting_seconds", d, lane["oldest_waiting_seconds"]
        for reason, count in lane["waiting_by_reason"].items():
            yield "janus_waiting_jobs_by_reason", {**d, "reason": reason}, count
        for verdict, count in lane["transitions"].items():
            yield "janus_job_transitions_total", {**d, "verdict": verdict}, count
        for kind, count in lane["gate_events"].items():
            yield "janus_gate_events_total", {**d, "kind": kind}, count
        for scope in lane["top_scopes"]:
            s = {**d, "scope": scope["scope"]}
            yield "janus_scope_waiting_jobs", s, scope["waiting"]
            yield "janus_scope_held_slots", s, scope["held"]
            yield "janus_scope_admitted_jobs", s, scope["admitted"]


def between(
    name: str, labels: dict[str, str], value: float, before: dict[Sample, float], after: dict[Sample, float]
) -> None:
    key = (name, tuple(sorted(labels.items())))
    low, high = sorted((before.get(key, 0.0), after.get(key, 0.0)))
    assert low <= value <= high, f"{name}{labels}: status shows {value}, /metrics {low}..{high}"


MONOTONE = {
    "janus_rate_limit_count",
    "janus_rate_limit_window_seconds",
    "janus_concurrency_limit",
    "janus_admissions_total",
    "janus_job_transitions_total",
    "janus_gate_events_total",
}


async def compare(base: str, registry: CollectorRegistry, *, only: set[str] | None = None) -> dict[str, Any]:
    """/metrics, then /status, then /metrics: each status number lies between the two scrapes
    (exact for what does not move; `only` the metrics that move one way while jobs flow)."""
    before = await scrape(registry)
    body = json.loads(await fetch(f"{base}/status"))
    after = await scrape(registry)
    served = parse(await fetch(f"{base}/metrics"))  # and /metrics over HTTP has every series read
    assert {name for name, _, _ in shown(body)} <= {name for name, _ in served}
    checked = 0
    for name, labels, value in shown(body):
        if only is None or name in only:
            between(name, labels, value, before, after)
            checked += 1
    assert checked
    waiting = {
        lane["dependency"]: sum(
            v
            for (n, labels), v in after.items()
            if n == "janus_waiting_jobs" and ("dependency", lane["dependency"]) in labels
        )
        for lane in body["dependencies"]
    }
    if only is None:
        assert {lane["dependency"]: lane["waiting"] for lane in body["dependencies"]} == waiting
    return body


async def test_status_numbers_are_the_metrics_while_jobs_flow_then_while_they_wait(
    database: str, vhost: str
) -> None:
    config = make_config(database, vhost, POLICIES)

    async def work(job: ReadyJob) -> None:
        await asyncio.sleep(0.01)  # the call to the dependency

    async with running_janus(config) as service, http(service) as base:
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([(f"job-{i}", "api", None, f"tenant-{i % 3}") for i in range(JOBS)])
        worker = Worker(vhost, {"api": work}, max_in_flight=4)
        async with worker:
            registry = service.metrics.registry
            await eventually(
                lambda: (
                    (registry.get_sample_value("janus_admissions_total", {"dependency": "api"}) or 0) >= 25
                ),
                timeout=30,
            )
            body = await compare(base, registry, only=MONOTONE)
            api, idle = body["dependencies"]
            assert (api["dependency"], idle["dependency"]) == ("api", "idle")
            assert api["state"] in ("throttled", "ok")
            assert idle["state"] == "ok"
            # The CLI shows the same answer.
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert await asyncio.to_thread(cli.main, ["status", "--json", "--url", base]) == 0
            assert json.loads(out.getvalue())["process"]["epoch"] == body["process"]["epoch"]

        # The worker has gone: admissions stop, the rest waits for a worker. The counts by reason
        # come from the scan of every scope (once a second): wait until it has seen the end too.
        def quiet() -> bool:
            value = registry.get_sample_value
            by_reason = value("janus_waiting_jobs_by_reason", {"dependency": "api", "reason": "no_worker"})
            waiting = sum(
                value("janus_waiting_jobs", {"dependency": "api", "kind": k}) or 0
                for k in ("ready", "stored", "delayed")
            )
            return value("janus_held_slots", {"dependency": "api"}) == 0 and by_reason == waiting > 0

        await eventually(quiet, timeout=30)
        body = await compare(base, registry)
        (api, _) = body["dependencies"]
        assert api["state"] == "no worker"
        assert api["waiting_by_reason"] == {"no_worker": api["waiting"]}
        assert 0 < api["waiting"] < JOBS


async def test_a_standby_says_who_leads(database: str, vhost: str) -> None:
    config = make_config(database, vhost, POLICIES)
    async with running_janus(config) as leader, running_janus(config, wait_leading=False) as standby:
        await eventually(lambda: standby.health.role.value == "standby", timeout=20)
        async with http(standby) as base:
            body = json.loads(await fetch(f"{base}/status"))
            assert body["dependencies"] == []
            assert body["leader"]["identity"] == str(leader.identity)
            assert body["leader"]["live"] is True
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert await asyncio.to_thread(cli.main, ["status", "--url", base]) == 0
            assert f"{leader.identity}" in out.getvalue()
            assert "leads in epoch" in out.getvalue()
