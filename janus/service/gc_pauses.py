"""The leader's pauses: garbage-collector pauses tuned down and measured, and the interpreter lock
handed back to the event loop sooner.

CPython's cyclic collector stops the event loop while it runs. With its default
thresholds and a large backlog of jobs in the core, full (generation 2) collections come
often and each is long: they made the latency tails of throughput runs
(benchmarks/throughput.py). Janus's state is mostly acyclic (tuples, strings, numbers,
dicts, freed by reference counting), so the young generation can be allowed to grow much
larger before a collection: RUN_THRESHOLDS makes full collections far rarer, and
janus_gc_pause_seconds shows what pauses remain.
"""

from __future__ import annotations

import gc
import sys
import time
from typing import Any

from prometheus_client import Histogram

RUN_THRESHOLDS = (10_000, 10, 10)  # CPython's default: (700, 10, 10)
# The HTTP server's threads render /metrics and /status in Python, holding the interpreter lock
# for tens of milliseconds with many dependencies: with CPython's 5 ms switch interval the event
# loop waits up to that long each time it wants the lock back; 1 ms bounds each wait closer
# (benchmarks/status_cost.py).
RUN_SWITCH_INTERVAL = 0.001  # seconds; CPython's default: 0.005


def tune_for_run() -> None:
    """For the `janus run` process only: process-wide settings, so not for embedders or tests."""
    gc.set_threshold(*RUN_THRESHOLDS)
    sys.setswitchinterval(RUN_SWITCH_INTERVAL)


class GcPauseObserver:
    """Observes every collection's duration into `histogram`, labelled by generation, while
    installed (a `gc.callbacks` entry: each Service installs its own and removes it)."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._children = {generation: histogram.labels(str(generation)) for generation in range(3)}
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._children[info["generation"]].observe(time.perf_counter() - self._started)

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def remove(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
