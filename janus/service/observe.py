"""What the admission loop shows: metrics and logs of ticks, set-aside input, publishes, gate
events, and the per-dependency and per-scope gauges."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import Gauge

from janus.api.metrics import Metrics
from janus.core.gates import GateEvent
from janus.core.jobs import Admission, Job
from janus.core.scheduler import Scheduler
from janus.service.tick import SetAside, TickResult

log = logging.getLogger("janus.admission")

CIRCUIT_LEVELS = {"closed": 0, "half_open": 1, "open": 2}  # janus_circuit_state
TOP_SCOPES = 10  # per dependency, in the per-scope metrics
SCOPE_METRICS_EVERY = 1.0  # seconds, at the least
# The per-scope gauges scan every scope (O(scopes), benchmarks/backlog_memory.py): the scan
# waits this many times its own last duration, so it never takes more than 1/50 of the
# leader's time, however many scopes there are.
SCOPE_METRICS_SHARE = 50


class ThrottledLog:
    """Log bad input once per reason per interval, so a flood of garbage cannot flood the logs."""

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, message: str, count: int = 1) -> None:
        """`count` messages like this one: the first may be logged, the rest are counted."""
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) >= self._interval:
            extra = self._suppressed.pop(key, 0)
            suffix = f" ({extra} more like it since last logged)" if extra else ""
            log.warning("%s%s", message, suffix)
            self._last[key] = now
            count -= 1
        if count:
            self._suppressed[key] = self._suppressed.get(key, 0) + count


class Observer:
    """The admission loop's metrics and logs, on the registry of `metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.throttled = ThrottledLog()
        self._gauges: dict[tuple[Gauge, tuple[str, ...]], Gauge] = {}
        self._shown_scopes: dict[str, set[str]] = {}

    # -- per tick ---------------------------------------------------------------

    def committed(self, result: TickResult) -> None:
        """A tick's effects, once committed (a tick that fails is retried message by message)."""
        metrics = self.metrics
        for dependency, count in result.revived.items():
            metrics.revived.labels(dependency).inc(count)
        for (source, verdict), count in result.events.items():
            metrics.events.labels(source, verdict).inc(count)
        metrics.intake_messages.labels("accepted").inc(result.accepted)
        metrics.intake_messages.labels("duplicate").inc(result.duplicates)
        if result.pages:
            metrics.pages_loaded.inc(result.pages)

    def tick(self, messages: int, started: float, scheduler: Scheduler) -> None:
        """After every tick: its duration and size, and the gauges of every dependency."""
        metrics = self.metrics
        metrics.tick_seconds.observe(time.perf_counter() - started)
        if messages:
            metrics.tick_messages.observe(messages)
        gauge = self._gauge
        for stats in scheduler.stats():
            gauge(metrics.held, stats.dependency).set(stats.held)
            gauge(metrics.waiting, stats.dependency, "ready").set(stats.ready)
            gauge(metrics.waiting, stats.dependency, "stored").set(stats.stored)
            gauge(metrics.waiting, stats.dependency, "delayed").set(stats.delayed)
            gauge(metrics.active_scopes, stats.dependency).set(stats.scopes)
        clock = scheduler.clock
        for gate in scheduler.gate_states():
            gauge(metrics.circuit_state, gate.dependency).set(CIRCUIT_LEVELS[gate.circuit.state.value])
            paused = gate.pause_until is not None and clock < gate.pause_until
            gauge(metrics.paused, gate.dependency).set(1 if paused else 0)
        for dependency, parked in scheduler.retry_budget_parked().items():
            gauge(metrics.retry_budget_parked, dependency).set(parked)
        for dependency, share in scheduler.recovery_shares().items():
            gauge(metrics.recovery_ramp, dependency).set(share)

    def _gauge(self, metric: Gauge, *labels: str) -> Gauge:
        """The gauge of these labels, looked up once: every tick sets several per dependency, and
        `labels()` is costly next to `set()` (the set of dependencies is fixed for a term)."""
        key = (metric, labels)
        child = self._gauges.get(key)
        if child is None:
            child = self._gauges[key] = metric.labels(*labels)
        return child

    def tick_failed(self, messages: int, error: BaseException, *, traceback: bool) -> None:
        self.metrics.tick_failures.inc()
        log.warning(
            "a tick of %d messages failed (%s); the core is rebuilt from PostgreSQL and the messages "
            "are retried one by one",
            messages,
            error,
            exc_info=error if traceback else None,
        )

    # -- after the commit ---------------------------------------------------------

    def set_aside(self, items: Sequence[SetAside]) -> None:
        """Counted and logged once per reason, not per message: a flood makes this a hot path."""
        first: dict[tuple[str, str], tuple[SetAside, int]] = {}
        for item in items:
            key = (item.source, item.reason)
            seen = first.get(key)
            first[key] = (item, 1) if seen is None else (seen[0], seen[1] + 1)
        for (source, reason), (item, count) in first.items():
            self.metrics.rejected_messages.labels(source, reason).inc(count)
            if source == "intake":
                self.metrics.intake_messages.labels("rejected").inc(count)
            self.throttled.warn(
                f"{source}:{reason}", f"set aside a message from {source}: {reason}: {item.detail}", count
            )

    def published(self, admissions: Iterable[Admission], refused: Sequence[Admission]) -> None:
        published = Counter(a.dependency for a in admissions)
        published.subtract(a.dependency for a in refused)
        for dependency, count in published.items():
            if count:
                self.metrics.admissions.labels(dependency).inc(count)
        if refused:
            for dependency, count in Counter(a.dependency for a in refused).items():
                self.metrics.publish_failures.labels(dependency).inc(count)
            log.warning("the broker refused %d admissions; they will wait again", len(refused))

    def outcomes(self, finished: Iterable[Job], refused: Sequence[Job]) -> None:
        for (dependency, outcome), count in Counter((j.dependency, j.state.value) for j in finished).items():
            self.metrics.outcomes.labels(dependency, outcome).inc(count)
        if refused:
            log.warning("the broker refused %d outcome messages; they are not sent again", len(refused))

    def gate_events(self, events: Iterable[GateEvent]) -> None:
        """Circuit changes, pauses and clamped retry_after values: logged and counted."""
        metrics = self.metrics
        for event in events:
            metrics.gate_events.labels(event.dependency, event.kind).inc()
            if event.kind == "retry_after_clamped":
                self.throttled.warn(f"clamped:{event.dependency}", f"{event.dependency}: {event.detail}")
            else:
                level = logging.WARNING if event.kind in ("circuit_open", "paused") else logging.INFO
                log.log(level, "%s: %s (%s)", event.dependency, event.kind.replace("_", " "), event.detail)

    def held(self, queue: str, seconds: float, limit: object) -> None:
        """A results queue held by its bad-results limit."""
        self.metrics.bad_results_held.labels(queue).inc()
        self.throttled.warn(
            f"held:{queue}",
            f"{queue} is held for {seconds:.2f} s: more than {limit} of its results were bad; "
            "the rest wait in the broker",
        )

    # -- per scope, on their own clock ----------------------------------------------

    async def scopes_forever(self, scheduler: Callable[[], Scheduler], clock: Callable[[], float]) -> None:
        """The per-scope gauges, on their own clock: an idle leader ticks seldom, but the age
        of what waits keeps growing. `scheduler` gives the core in use (a rebuild replaces it)."""
        while True:
            started = time.monotonic()
            self.scopes(scheduler(), clock())
            took = time.monotonic() - started
            await asyncio.sleep(max(SCOPE_METRICS_EVERY, SCOPE_METRICS_SHARE * took))

    def scopes(self, scheduler: Scheduler, now: float) -> None:
        """Per-scope gauges for the largest backlogs only (O(scopes): not per tick, see SCOPE_METRICS_SHARE)."""
        metrics = self.metrics
        scope_gauges = (
            metrics.scope_waiting,
            metrics.scope_held,
            metrics.scope_admitted,
            metrics.scope_oldest_waiting,
        )
        for dependency in scheduler.policies:
            top = scheduler.scope_stats(dependency, top=TOP_SCOPES)
            shown = {s.scope for s in top}
            for scope in self._shown_scopes.get(dependency, set()) - shown:
                for gauge in scope_gauges:
                    gauge.remove(dependency, scope)
            self._shown_scopes[dependency] = shown
            for stats in top:
                metrics.scope_waiting.labels(dependency, stats.scope).set(stats.waiting)
                metrics.scope_held.labels(dependency, stats.scope).set(stats.held)
                metrics.scope_admitted.labels(dependency, stats.scope).set(stats.admitted)
                since = stats.oldest_waiting_since
                metrics.scope_oldest_waiting.labels(dependency, stats.scope).set(
                    max(0.0, now - since) if since is not None else 0.0
                )
            oldest = scheduler.oldest_waiting_since(dependency)
            metrics.oldest_waiting.labels(dependency).set(
                max(0.0, now - oldest) if oldest is not None else 0.0
            )
