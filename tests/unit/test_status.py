"""`janus status` and GET /status: the picture read from the metrics registry, and its screen."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from janus.api.http import serve
from janus.api.metrics import Metrics
from janus.api.status import StatusBoard, picture
from janus.cli.status import render, standby_line
from tests.unit.test_metrics import free_port, get


def leader_metrics() -> Metrics:
    m = Metrics()
    m.is_leader.set(1)
    m.leader_epoch.set(7)
    m.rate_limit.labels("api", "100/1s").set(100)
    m.rate_window.labels("api", "100/1s").set(1)
    m.rate_used.labels("api", "100/1s").set(100)
    m.concurrency_limit.labels("api").set(20)
    m.held.labels("api").set(12)
    for kind, count in (("ready", 30), ("stored", 10), ("delayed", 2)):
        m.waiting.labels("api", kind).set(count)
    m.waiting_by_reason.labels("api", "rate").set(40)
    m.waiting_by_reason.labels("api", "backoff").set(2)
    m.waiting_by_reason.labels("api", "circuit").set(0)
    m.blocked.labels("api", "rate", "rate 100/1s").set(1)
    m.next_admission.labels("api").set(1000.5)
    m.oldest_waiting.labels("api").set(3.25)
    m.admissions.labels("api").inc(500)
    m.transitions.labels("api", "dead").inc(2)
    m.gate_events.labels("api", "paused").inc(3)
    m.scope_waiting.labels("api", "tenant-a").set(30)
    m.scope_waiting.labels("api", "tenant-b").set(12)
    m.scope_held.labels("api", "tenant-a").set(5)
    m.held.labels("mail").set(0)
    m.waiting.labels("mail", "ready").set(0)
    m.circuit_state.labels("mail").set(2)
    m.next_admission.labels("mail").set(math.inf)
    return m


def test_the_picture_is_the_registry_s_samples() -> None:
    body = picture(leader_metrics().registry, now=1000.0)
    assert body["process"]["leading"] is True
    assert body["process"]["epoch"] == 7
    api, mail = body["dependencies"]
    assert api["rates"] == [{"limit": "100/1s", "count": 100, "window_seconds": 1, "used": 100}]
    assert (api["held"], api["concurrency"], api["waiting"]) == (12, 20, 42)
    assert api["waiting_by_reason"] == {"rate": 40, "backoff": 2}  # zeros left out
    assert api["blocked"] == {"reason": "rate", "limit": "rate 100/1s", "lifts_in_seconds": 0.5}
    assert api["state"] == "throttled"
    assert api["oldest_waiting_seconds"] == 3.25
    assert api["admissions_total"] == 500
    assert api["transitions"] == {"dead": 2}
    assert api["gate_events"] == {"paused": 3}
    assert [s["scope"] for s in api["top_scopes"]] == ["tenant-a", "tenant-b"]
    assert api["top_scopes"][0]["held"] == 5
    assert (mail["state"], mail["concurrency"], mail["blocked"]) == ("circuit open", None, None)
    json.dumps(body, allow_nan=False)  # no infinity leaks into the JSON


def test_a_process_that_does_not_lead_shows_no_dependencies() -> None:
    m = leader_metrics()
    m.is_leader.set(0)  # a former leader's gauges linger: they are not shown
    assert picture(m.registry)["dependencies"] == []


def test_the_screen_shows_every_dependency_and_who_leads_when_standing_by() -> None:
    from rich.console import Console

    console = Console(width=200, record=True, color_system=None)
    console.print(render(picture(leader_metrics().registry, now=1000.0)))
    text = console.export_text()
    assert "epoch 7" in text
    for shown in ("throttled", "circuit open", "100/100/1s", "12/20", "rate 100/1s, lifts in 0.5s"):
        assert shown in text
    assert "tenant-a 30w/5h" in text
    standby: dict[str, Any] = {
        "process": {"leading": False},
        "leader": {"identity": "abc", "epoch": 3, "live": True, "address": "10.0.0.5"},
    }
    assert (
        standby_line(standby)
        == "this process does not lead: abc on 10.0.0.5 leads in epoch 3; ask it with --url"
    )


async def test_status_is_served_and_a_standby_says_who_leads() -> None:
    metrics = leader_metrics()
    metrics.is_leader.set(0)
    loop = asyncio.get_running_loop()

    async def who_leads() -> dict[str, Any]:
        return {"identity": "other", "epoch": 9, "live": True, "address": None}

    port = free_port()
    board = StatusBoard(metrics.registry, loop, who_leads)
    server = serve("127.0.0.1", port, metrics.registry, loop, lambda: (True, {}), status=board)
    try:
        status, text = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/status")
        assert status == 200
        body = json.loads(text)
        assert body["leader"]["identity"] == "other"
        assert body["dependencies"] == []
        metrics.is_leader.set(1)
        status, text = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/status")
        assert [d["dependency"] for d in json.loads(text)["dependencies"]] == ["api", "mail"]
    finally:
        server.close()


async def test_the_page_and_its_files_are_served_with_the_status() -> None:
    metrics = leader_metrics()
    loop = asyncio.get_running_loop()
    port = free_port()
    board = StatusBoard(metrics.registry, loop)
    server = serve("127.0.0.1", port, metrics.registry, loop, lambda: (True, {}), status=board)
    base = f"http://127.0.0.1:{port}"
    try:
        status, text = await asyncio.to_thread(get, f"{base}/")
        assert status == 200
        assert '<script src="/static/app.js"' in text
        for path in ("/static/app.js", "/static/style.css"):
            status, text = await asyncio.to_thread(get, base + path)
            assert status == 200
            assert "http://" not in text.replace("http://www.w3.org/2000/svg", ""), "no other origin: no CDN"
        assert (await asyncio.to_thread(get, f"{base}/static/../page.py"))[0] == 404
        assert (await asyncio.to_thread(get, f"{base}/static/other.js"))[0] == 404
    finally:
        server.close()


def test_a_refresh_collects_every_metric_the_picture_reads_and_only_real_ones() -> None:
    import inspect
    import re

    from janus.api import status
    from tests.unit.test_docs import declared_metrics

    read = set(
        re.findall(r'"(janus_[a-z_]+)"', inspect.getsource(status.lane) + inspect.getsource(status.process))
    )
    read |= set(re.findall(r'"(janus_[a-z_]+)"', inspect.getsource(status.Samples.dependencies)))
    assert read <= set(status.READ), read - set(status.READ)
    assert set(status.READ) <= set(declared_metrics())


async def test_watch_refreshes_until_interrupted() -> None:
    """`janus status --watch` asks again and again, and ends cleanly on Ctrl-C (SIGINT)."""
    import signal
    import subprocess
    import sys
    import threading

    metrics = leader_metrics()
    loop = asyncio.get_running_loop()
    asked = threading.Semaphore(0)

    class Counting(StatusBoard):
        async def answer(self) -> tuple[bool, bytes]:
            asked.release()
            return await super().answer()

    port = free_port()
    board = Counting(metrics.registry, loop)
    server = serve("127.0.0.1", port, metrics.registry, loop, lambda: (True, {}), status=board)
    command = [sys.executable, "-m", "janus.cli", "status", "--watch", "--interval", "0.1"]
    process = await asyncio.create_subprocess_exec(
        *command, "--url", f"http://127.0.0.1:{port}", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        for _ in range(3):  # the first answer, then two refreshes
            assert await asyncio.to_thread(asked.acquire, timeout=30)
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
        server.close()
    assert process.returncode == 0, err.decode()
    assert "epoch 7" in out.decode()


def test_a_pause_and_an_override_show_who_why_and_until_when() -> None:
    from rich.console import Console

    m = leader_metrics()
    steered = m.steering
    m.overridden.labels("api").set(1)
    steered.labels("api", "override", "bob: incident 7").set(1060.0)
    m.overridden.labels("mail").set(0)
    m.paused.labels("mail").set(1)
    m.circuit_state.labels("mail").set(0)
    steered.labels("mail", "pause", "alice").set(math.inf)
    body = picture(m.registry, now=1000.0)
    api, mail = body["dependencies"]
    assert api["overridden"] is True
    assert api["steering"] == {"pause": None, "override": {"by": "bob: incident 7", "until": 1060}}
    assert api["state"] == "throttled"  # what holds it back first; the override is said beside
    assert (mail["state"], mail["overridden"]) == ("paused", False)
    assert mail["steering"] == {"pause": {"by": "alice", "until": None}, "override": None}
    json.dumps(body, allow_nan=False)
    m.blocked.remove("api", "rate", "rate 100/1s")
    assert picture(m.registry, now=1000.0)["dependencies"][0]["state"] == "overridden"
    console = Console(width=200, record=True, color_system=None)
    console.print(render(body))
    text = console.export_text()
    assert "api: overridden by bob: incident 7 until 00:17:40 UTC (in 60.0s)" in text
    assert "mail: paused by alice until resumed" in text


def a_change(what: str, **fields: Any) -> dict[str, Any]:
    change: dict[str, Any] = {
        "what": what,
        "version": None,
        "dependency": "api",
        "actor": "alice",
        "reason": None,
        "at": 1000.0,
        "until": None,
        "detail": "",
        "applied": True,
    }
    return {**change, **fields}


async def test_recent_changes_are_the_leader_s_copy_in_status_and_at_changes() -> None:
    """/status and /changes answer from the copy the leader published, never from the database;
    a process that does not lead (or whose term ended) shows none."""
    from janus.api.changes import RecentChanges

    metrics = leader_metrics()
    changes = RecentChanges()
    loop = asyncio.get_running_loop()
    port = free_port()
    board = StatusBoard(metrics.registry, loop, changes=changes)
    server = serve("127.0.0.1", port, metrics.registry, loop, lambda: (True, {}), status=board)
    base = f"http://127.0.0.1:{port}"
    listed = [a_change("pause", reason="incident 7"), a_change("version", version=2, detail="+ x")]
    try:
        assert json.loads((await asyncio.to_thread(get, f"{base}/changes"))[1])["changes"] == []
        changes.publish(listed, now=1001.0)
        status, text = await asyncio.to_thread(get, f"{base}/changes")
        assert status == 200
        assert json.loads(text) == {"leading": True, "refreshed_at": 1001.0, "changes": listed}
        assert json.loads((await asyncio.to_thread(get, f"{base}/status"))[1])["recent_changes"] == listed
        metrics.is_leader.set(0)
        assert json.loads((await asyncio.to_thread(get, f"{base}/status"))[1])["recent_changes"] == []
        changes.forget()
        assert json.loads((await asyncio.to_thread(get, f"{base}/changes"))[1])["leading"] is False
    finally:
        server.close()


def test_the_screen_lists_the_recent_changes_newest_first() -> None:
    from rich.console import Console

    from janus.cli.status import CHANGES_SHOWN, change_line

    body = picture(leader_metrics().registry, now=1000.0)
    body["recent_changes"] = [
        a_change("override", actor="bob", reason="drill", until=1600.0, detail="concurrency 2, rate 5/1s"),
        a_change("pause", reason="incident 7", applied=False),
        a_change("version", version=3, dependency=None, detail="- a\n+ b"),
    ] + [a_change("resume")] * CHANGES_SHOWN
    assert change_line(body["recent_changes"][0]) == (
        "1970-01-01 00:16:40Z  override api (concurrency 2, rate 5/1s) until 00:26:40Z  by bob: drill"
    )
    assert change_line(body["recent_changes"][1]).endswith(
        "pause api until resumed  by alice: incident 7  (pending)"
    )
    assert change_line(body["recent_changes"][2]) == "1970-01-01 00:16:40Z  version 3  by alice"
    console = Console(width=200, record=True, color_system=None)
    console.print(render(body))
    text = console.export_text()
    assert "recent changes" in text
    assert text.count("resume api") == CHANGES_SHOWN - 3  # the newest CHANGES_SHOWN only
