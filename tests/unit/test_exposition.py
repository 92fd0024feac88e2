"""The kept /metrics exposition writes byte for byte what prometheus_client's encoders write, scrape
after scrape, while series change, come and go (janus/api/exposition.py)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase, disable_created_metrics, enable_created_metrics
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from janus.api.exposition import Exposition, kept_format
from janus.api.metrics import Metrics

# Label values that need escaping, and values whose text is not plain repr().
AWKWARD_LABELS = ("plain", 'a "quoted" one', "back\\slash", "new\nline", "café-1", "")
AWKWARD_VALUES = (0.0, -0.0, 1.0, 2.5, 1e-7, 1_764_690_000.125, 12_345_678.0, math.inf, -math.inf, math.nan)


def fill(metrics: Metrics, round_: int) -> None:
    """Every series Janus declares gets a value; labels and values cycle through awkward ones."""
    for index, collector in enumerate(list(metrics.registry._collector_to_names)):  # type: ignore[attr-defined]
        assert isinstance(collector, MetricWrapperBase)
        value = AWKWARD_VALUES[(index + round_) % len(AWKWARD_VALUES)]
        names = collector._labelnames
        for k, label in enumerate(AWKWARD_LABELS[: 2 + round_ % 3]):
            child = collector.labels(*[f"{label}{n}" for n in range(len(names))]) if names else collector
            if isinstance(child, Gauge):
                child.set(value + k if not math.isnan(value) else value)
            elif isinstance(child, Counter):
                child.inc(abs(value) if math.isfinite(value) else k + 1)
            elif isinstance(child, Histogram):
                child.observe(k / 10)
            if not names:
                break


def both(registry: CollectorRegistry) -> Iterator[tuple[Exposition, bytes]]:
    yield Exposition(registry), generate_latest(registry)
    yield Exposition(registry, openmetrics=True), openmetrics_latest(registry)


def test_every_metric_janus_declares_is_written_as_the_library_writes_it() -> None:
    metrics = Metrics()
    kept = Exposition(metrics.registry)
    kept_om = Exposition(metrics.registry, openmetrics=True)
    assert kept.render() == generate_latest(metrics.registry)  # no series yet
    for round_ in range(6):
        fill(metrics, round_)
        if round_ == 3:  # series go away, one by one and all at once
            metrics.scope_waiting.clear()
            metrics.held.remove("plain0")
            metrics.transitions.remove("plain0", "plain1")
        assert kept.render() == generate_latest(metrics.registry), round_
        assert kept_om.render() == openmetrics_latest(metrics.registry), round_
        assert kept.render() == generate_latest(metrics.registry), round_  # nothing changed


def test_what_it_does_not_keep_the_library_writes() -> None:
    registry = CollectorRegistry()
    ticking = Gauge("janus_test_function", "A gauge with set_function.", registry=registry)
    ticking.set_function(lambda: 4.5)
    Gauge("janus_test_unit", "A gauge with a unit.", unit="seconds", registry=registry).set(1)
    with_exemplar = Counter("janus_test_exemplar", "A counter with an exemplar.", ["a"], registry=registry)
    with_exemplar.labels("x").inc(1, exemplar={"trace": "abc"})
    Histogram("janus_test_histogram", "A histogram.", ["a"], registry=registry).labels("x").observe(0.3)

    class Foreign:
        def collect(self) -> list[Metric]:
            family = GaugeMetricFamily("janus_test_foreign", "A custom collector.", labels=["a"])
            family.add_metric(["y"], 2.0)
            return [family]

    registry.register(Foreign())  # type: ignore[arg-type]
    Gauge("janus_test_plain", "A kept gauge between them.", ["a"], registry=registry).labels("z").set(3)
    for kept, expected in both(registry):
        assert kept.render() == expected
        assert kept.render() == expected


def test_without_created_series_too() -> None:
    metrics = Metrics()
    fill(metrics, 0)
    kept = list(both(metrics.registry))
    disable_created_metrics()
    try:
        for exposition, _ in kept:
            rendered = exposition.render()
            assert b"_created" not in rendered
        assert kept[0][0].render() == generate_latest(metrics.registry)
        assert kept[1][0].render() == openmetrics_latest(metrics.registry)
    finally:
        enable_created_metrics()
    assert kept[0][0].render() == generate_latest(metrics.registry)


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "text/plain;version=0.0.4",
        "text/plain;version=1.0.0;escaping=allow-utf-8",
        "text/plain;version=1.0.0;escaping=dots",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "application/openmetrics-text;version=1.0.0;escaping=underscores",
        "application/openmetrics-text;version=1.0.0;escaping=dots",
        "application/openmetrics-text;version=2.0.0",
        "application/openmetrics-text",
    ],
)
def test_what_a_scraper_asks_for_is_kept_only_where_it_is_the_same_text(accept: str) -> None:
    metrics = Metrics()
    fill(metrics, 1)
    encoder, _ = choose_encoder(accept)
    openmetrics = kept_format(encoder)
    if openmetrics is None:
        assert "dots" in accept or "2.0.0" in accept
        return
    assert Exposition(metrics.registry, openmetrics=openmetrics).render() == encoder(metrics.registry)
