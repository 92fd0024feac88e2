"""The adaptive limits as operators see them: the metrics, `janus status`, the blocked label."""

from __future__ import annotations

import random

from janus.api.metrics import Metrics
from janus.api.status import Samples, lane
from janus.cli.status import adaptive_line
from janus.core.adaptive import AdaptiveView, Signal
from janus.core.policy import AdaptivePolicy, DependencyPolicy
from janus.core.scheduler import Scheduler
from janus.service.observe import Observer


def test_the_limits_and_their_last_signal_reach_the_status() -> None:
    metrics = Metrics()
    observer = Observer(metrics)
    view = AdaptiveView(
        rate=38.0, concurrency=12, reason="lowered after 3 throttled results", changed_at=98.0
    )
    observer.adaptive({"api": view})
    observer.adaptive({"api": AdaptiveView(**{**_fields(view), "signal": Signal.THROTTLED})})
    samples = Samples.of(metrics.registry)
    shown = [s for s in metrics.registry.collect() if s.name == "janus_adaptive_changed_timestamp_seconds"]
    assert [sample.labels["signal"] for sample in shown[0].samples] == ["throttled"]  # one series
    metrics.held.labels("api").set(0)  # what makes it a dependency of the status
    body = lane(Samples.of(metrics.registry), "api", 100.0)
    assert body["adaptive"] == {
        "rate": 38,
        "concurrency": 12,
        "signal": "throttled",
        "changed_seconds_ago": 2,
    }
    assert (
        adaptive_line(body["adaptive"])
        == "adaptive rate 38/1s, concurrency 12, lowered 2 s ago after throttled results"
    )
    assert samples.value("janus_adaptive_rate", dependency="api") == 38.0
    observer.adaptive({})  # adaptation turned off: the series go
    assert Samples.of(metrics.registry).value("janus_adaptive_rate", dependency="api") is None


def test_the_blocked_label_of_an_adaptive_limit_is_stable() -> None:
    metrics = Metrics()
    observer = Observer(metrics)
    dependency = DependencyPolicy(name="api", lease_timeout=60.0, adaptive=AdaptivePolicy(max_rate=100.0))
    core = Scheduler([dependency], random.Random(1))
    for i in range(20):
        core.submit(job_id=f"j{i}", dependency="api", scope="s", payload=None, now=0.0)
    core.admit(0.0)
    observer.limits(core, 0.0)
    [family] = [m for m in metrics.registry.collect() if m.name == "janus_dependency_blocked"]
    assert [(s.labels["reason"], s.labels["limit"]) for s in family.samples] == [("rate", "adaptive rate")]


def _fields(view: AdaptiveView) -> dict[str, object]:
    return {name: getattr(view, name) for name in AdaptiveView.__slots__}
