"""The dependencies' gauges under a busy loop: set at most every GAUGES_EVERY by the ticks, and
brought up to date as soon as the loop idles (`refresh_if_stale`)."""

from __future__ import annotations

import random
import time

import pytest

from janus.api.metrics import Metrics
from janus.core.policy import DependencyPolicy
from janus.core.scheduler import Scheduler
from janus.service import observe
from janus.service.observe import Observer

POLICY = DependencyPolicy(name="api", concurrency=5, admission_ttl=1.0, lease_timeout=30.0)


def waiting(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("janus_waiting_jobs", {"dependency": "api", "kind": "ready"})


def submit(scheduler: Scheduler, count: int, first: int = 0) -> None:
    for n in range(first, first + count):
        scheduler.submit(job_id=f"j{n}", dependency="api", scope="s", payload=None, now=0.0)


def test_a_tick_soon_after_the_last_leaves_the_gauges_to_the_next_idle_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics, scheduler = Metrics(), Scheduler([POLICY], random.Random(0))
    observer = Observer(metrics)
    monkeypatch.setattr(observe, "GAUGES_EVERY", 3600.0)  # "soon", however slow the machine
    submit(scheduler, 3)
    observer.tick(3, time.perf_counter(), scheduler)  # the first: the gauges are set
    assert waiting(metrics) == 3
    submit(scheduler, 4, first=3)
    observer.tick(4, time.perf_counter(), scheduler)  # within GAUGES_EVERY: deferred
    assert waiting(metrics) == 3
    observer.refresh_if_stale(scheduler)  # the loop is about to idle
    assert waiting(metrics) == 7


def test_a_tick_after_the_interval_sets_them_and_nothing_stale_is_set_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics, scheduler = Metrics(), Scheduler([POLICY], random.Random(0))
    observer = Observer(metrics)
    monkeypatch.setattr(observe, "GAUGES_EVERY", 0.0)  # every tick is "late enough"
    submit(scheduler, 2)
    observer.tick(2, time.perf_counter(), scheduler)
    submit(scheduler, 1, first=2)
    observer.tick(1, time.perf_counter(), scheduler)
    assert waiting(metrics) == 3
    calls: list[Scheduler] = []
    monkeypatch.setattr(observer, "gauges", calls.append)
    observer.refresh_if_stale(scheduler)  # nothing deferred: no second pass over the dependencies
    assert calls == []
