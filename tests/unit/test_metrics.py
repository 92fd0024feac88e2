"""The metrics endpoint serves the registry it was given."""

from __future__ import annotations

import socket
import urllib.request

from janus.api.metrics import Metrics


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_metrics_are_served_over_http() -> None:
    metrics = Metrics()
    metrics.admissions.labels("api").inc(3)
    metrics.is_leader.set(1)
    port = free_port()
    server = metrics.serve("127.0.0.1", port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'janus_admissions_total{dependency="api"} 3.0' in text
    assert "janus_is_leader 1.0" in text


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.admissions.labels("api").inc()
    assert second.registry.get_sample_value("janus_admissions_total", {"dependency": "api"}) is None
