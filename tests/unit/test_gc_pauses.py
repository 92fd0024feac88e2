"""The leader's garbage-collector pauses are measured (janus_gc_pause_seconds) and, in `janus run`, made rarer."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from janus.api.metrics import Metrics
from janus.service.gc_pauses import RUN_SWITCH_INTERVAL, RUN_THRESHOLDS, GcPauseObserver, tune_for_run


def pauses(metrics: Metrics, generation: int) -> float:
    value = metrics.registry.get_sample_value("janus_gc_pause_seconds_count", {"generation": str(generation)})
    return value or 0.0


def test_each_collection_is_observed_while_installed() -> None:
    metrics = Metrics()
    observer = GcPauseObserver(metrics.gc_pause)
    enabled = gc.isenabled()
    gc.disable()  # only the collections below: none triggered by allocations meanwhile
    try:
        observer.install()
        observer.install()  # once only
        try:
            gc.collect(0)
            gc.collect(2)
            assert pauses(metrics, 0) == 1
            assert pauses(metrics, 2) == 1  # counted once, though installed twice
        finally:
            observer.remove()
        gc.collect(2)
        assert pauses(metrics, 2) == 1, "removed: no longer observed"
    finally:
        if enabled:
            gc.enable()


@pytest.fixture
def thresholds() -> Iterator[None]:
    before, interval = gc.get_threshold(), sys.getswitchinterval()
    yield
    gc.set_threshold(*before)
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("thresholds")
def test_janus_run_lets_the_young_generation_grow() -> None:
    tune_for_run()
    assert gc.get_threshold() == RUN_THRESHOLDS
    assert RUN_THRESHOLDS[0] > 700, "larger than CPython's default"
    assert sys.getswitchinterval() == pytest.approx(RUN_SWITCH_INTERVAL)
    assert RUN_SWITCH_INTERVAL < 0.005, "shorter than CPython's default"
