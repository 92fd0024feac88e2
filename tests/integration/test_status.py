"""`janus status` and GET /status on a running Janus with jobs flowing: every number is the one
/metrics serves; a standby says who leads."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
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
    board = StatusBoard(registry, loop, service.who_leads, service.changes)
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
        yield "janus_dependency_overridden", d, 1 if lane["overridden"] else 0
        for kind, hand in lane["steering"].items():
            if hand is not None:
                until = math.inf if hand["until"] is None else hand["until"]
                yield (
                    "janus_dependency_steering_until_timestamp_seconds",
                    {**d, "kind": kind, "by": hand["by"]},
                    until,
                )
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


STEERING = {"janus_dependency_overridden", "janus_dependency_steering_until_timestamp_seconds"}
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


async def test_a_pause_and_an_override_show_in_status_as_in_the_metrics(database: str, vhost: str) -> None:
    """`janus pause` and `janus override` on a running leader: status says who, why and until
    when, shows the override's limits (the limits in force) and nothing of the policy's, and
    every number is the one /metrics serves; resuming and clearing take it all back."""
    from tests.integration.harness import janus_cli

    config = make_config(database, vhost, POLICIES)

    async def work(job: ReadyJob) -> None:
        await asyncio.sleep(0.01)

    async with running_janus(config) as service, http(service) as base:
        registry = service.metrics.registry
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([(f"job-{i}", "api", None, f"tenant-{i % 3}") for i in range(JOBS)])
        async with Worker(vhost, {"api": work}, max_in_flight=4):
            await eventually(
                lambda: (
                    (registry.get_sample_value("janus_admissions_total", {"dependency": "api"}) or 0) >= 10
                ),
                timeout=30,
            )
            for command in (
                ["pause", "api", "--actor", "alice", "--reason", "incident 7"],
                [
                    "override",
                    "api",
                    "--concurrency",
                    "2",
                    "--rate-limit",
                    "5/1s",
                    "--for",
                    "10m",
                    "--actor",
                    "bob",
                    "--reason",
                    "drill",
                ],
            ):
                code, out, err = await janus_cli(*command, database=database)
                assert code == 0, err + out
            asked = time.time()

            async def api_lane(shows: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
                """The api's status once it shows what was applied (the gauges follow at the
                leader's next tick), every number checked against /metrics each time."""
                async with asyncio.timeout(30):
                    while True:
                        body = await compare(base, registry, only=MONOTONE | STEERING)
                        lane = dict(body["dependencies"][0])
                        if shows(lane):
                            return lane
                        await asyncio.sleep(0.05)

            lane = await api_lane(lambda lane: lane["overridden"] and lane["steering"]["pause"] is not None)
            assert lane["state"] == "paused"
            assert lane["steering"]["pause"] == {"by": "alice: incident 7", "until": None}
            override = lane["steering"]["override"]
            assert override["by"] == "bob: drill"
            assert asked + 500 < override["until"] < asked + 700
            assert [rate["limit"] for rate in lane["rates"]] == ["5/1s"]  # the policy's 20/1s is gone
            assert lane["concurrency"] == 2
            out_text = io.StringIO()
            with contextlib.redirect_stdout(out_text):
                assert await asyncio.to_thread(cli.main, ["status", "--url", base]) == 0
            screen = " ".join(out_text.getvalue().split())
            assert "paused by alice: incident 7 until resumed" in screen
            assert "overridden by bob: drill until" in screen
            assert "/5/1s" in screen

            # The recent changes: the leader's copy, read after it applied them.
            async def changes(count: int) -> list[dict[str, Any]]:
                async with asyncio.timeout(30):
                    while True:
                        listed = json.loads(await fetch(f"{base}/changes"))["changes"]
                        if len(listed) >= count:
                            return list(listed)
                        await asyncio.sleep(0.05)

            override_change, pause_change, version = await changes(3)
            assert (pause_change["what"], pause_change["actor"], pause_change["reason"]) == (
                "pause",
                "alice",
                "incident 7",
            )
            assert (override_change["what"], override_change["detail"]) == (
                "override",
                "concurrency 2, rate 5/1s",
            )
            assert override_change["until"] == override["until"]
            assert (version["what"], version["version"]) == ("version", 1)
            assert all(change["applied"] for change in (override_change, pause_change, version))
            status_changes = json.loads(await fetch(f"{base}/status"))["recent_changes"]
            assert status_changes[:3] == [override_change, pause_change, version]
            out_text = io.StringIO()
            with contextlib.redirect_stdout(out_text):
                assert await asyncio.to_thread(cli.main, ["status", "--url", base]) == 0
            assert "pause api until resumed by alice: incident 7" in " ".join(out_text.getvalue().split())

            code, out, err = await janus_cli("resume", "api", database=database)
            assert code == 0, err + out
            lane = await api_lane(lambda lane: lane["steering"]["pause"] is None)
            assert lane["state"] in ("overridden", "throttled")
            code, out, err = await janus_cli("override", "api", "--clear", database=database)
            assert code == 0, err + out
            lane = await api_lane(lambda lane: not lane["overridden"])
            assert lane["steering"] == {"pause": None, "override": None}
            assert [rate["limit"] for rate in lane["rates"]] == ["20/1s"]
            assert lane["concurrency"] == 4
