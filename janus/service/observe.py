"""What the admission loop shows: metrics and logs of ticks, set-aside input, publishes, gate
events, and the per-dependency and per-scope gauges."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client import Gauge

from janus.api.metrics import Metrics
from janus.core.adaptive import AdaptiveView
from janus.core.decisions import WaitReason
from janus.core.gates import GateEvent
from janus.core.jobs import Admission, Job
from janus.core.scheduler import Scheduler
from janus.core.steering import Steering
from janus.service.tick import SetAside, TickResult

log = logging.getLogger("janus.admission")

CIRCUIT_LEVELS = {"closed": 0, "half_open": 1, "open": 2}  # janus_circuit_state
TOP_SCOPES = 10  # per dependency, in the per-scope metrics
SCOPE_METRICS_EVERY = 1.0  # seconds, at the least
# The per-scope gauges scan every scope (O(scopes), benchmarks/backlog_memory.py): the scan
# waits this many times its own last duration, so it never takes more than 1/50 of the
# leader's time, however many scopes there are.
SCOPE_METRICS_SHARE = 50
# janus_waiting_jobs_by_reason: every reason a waiting job is counted under, always shown (0 too),
# so that a series never vanishes when its count falls to nothing.
SHOWN_REASONS = tuple(r for r in WaitReason if r not in (WaitReason.QUEUED, WaitReason.PAGING))
JOB_ID_PARSE_LIMIT = 4096  # bytes of a set-aside body read for its job id, at most
LOOP_LAG_EVERY = 0.5  # seconds between two measures of the event loop's lag
# The dependencies' gauges cost O(dependencies) (about 20 us each): a busy loop ticking hundreds
# of times a second sets them at most this often, and once more as soon as it idles
# (`refresh_if_stale`), so an idle leader's gauges are exact and a busy one's this old at most.
GAUGES_EVERY = 0.1  # seconds


async def loop_lag_forever(gauge: Gauge) -> None:
    """How late the loop runs a sleeper it was asked to wake: the delay any callback sees."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(LOOP_LAG_EVERY)
        gauge.set(max(0.0, loop.time() - asked - LOOP_LAG_EVERY))


def job_id_of(item: SetAside) -> str | None:
    """The job id a set-aside message names, if it is small JSON that names one (for the log line
    only: never trusted, never parsed from a large body)."""
    body = getattr(item.message, "body", b"")
    if not isinstance(body, bytes) or len(body) > JOB_ID_PARSE_LIMIT:
        return None
    try:
        decoded = json.loads(body)
    except ValueError:
        return None
    job_id = decoded.get("job_id") if isinstance(decoded, dict) else None
    return job_id if isinstance(job_id, str) else None


class ThrottledLog:
    """Log bad input once per reason per interval, so a flood of garbage cannot flood the logs."""

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, message: str, count: int = 1, **context: str | None) -> None:
        """`count` messages like this one: the first may be logged, the rest are counted.
        `context` goes with the line (JANUS_LOG_FORMAT=json shows it: janus/logs.py)."""
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) >= self._interval:
            extra = self._suppressed.pop(key, 0)
            suffix = f" ({extra} more like it since last logged)" if extra else ""
            log.warning("%s%s", message, suffix, extra={k: v for k, v in context.items() if v is not None})
            self._last[key] = now
            count -= 1
        if count:
            self._suppressed[key] = self._suppressed.get(key, 0) + count


def _stable(limit: str) -> str:
    """A limit as a label value: "adaptive rate 38/1s, lowered ..." is "adaptive rate"."""
    return " ".join(limit.split(" ", 2)[:2]) if limit.startswith("adaptive ") else limit


class Observer:
    """The admission loop's metrics and logs, on the registry of `metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.throttled = ThrottledLog()
        self._gauges: dict[tuple[Gauge, tuple[str, ...]], Gauge] = {}
        self._shown_scopes: dict[str, set[str]] = {}
        self._blocked: dict[str, tuple[str, str]] = {}  # the janus_dependency_blocked labels shown
        self._values: dict[tuple[Gauge, tuple[str, ...]], float] = {}  # what _put last set
        # The limit series shown per dependency: a policy version or an override that changes the
        # rate limits (or drops the cap) must take the old series away, or status shows both.
        self._rates: dict[str, set[str]] = {}
        self._capped: set[str] = set()
        self._steered: dict[tuple[str, str], str] = {}  # (dependency, kind) -> its `by` label
        self._adaptive: dict[str, str] = {}  # dependency -> the `signal` label shown
        self._gauges_at = float("-inf")  # perf_counter time the dependencies' gauges were last set
        self._stale = False  # a tick since then may have changed them
        # A new term (a new Observer on the same registry) starts from nothing: the series it
        # removes by name are the ones it shows, so none a previous term showed may linger.
        for shown in (
            metrics.blocked,
            metrics.scope_waiting,
            metrics.scope_held,
            metrics.scope_admitted,
            metrics.scope_oldest_waiting,
            metrics.rate_limit,
            metrics.rate_window,
            metrics.rate_used,
            metrics.concurrency_limit,
            metrics.steering,
        ):
            shown.clear()

    # -- per tick ---------------------------------------------------------------

    def committed(self, result: TickResult) -> None:
        """A tick's effects, once committed (a tick that fails is retried message by message)."""
        metrics = self.metrics
        for dependency, count in result.revived.items():
            metrics.revived.labels(dependency).inc(count)
        for (source, verdict), count in result.events.items():
            metrics.events.labels(source, verdict).inc(count)
        for (dependency, verdict), count in result.transitions.items():
            metrics.transitions.labels(dependency, verdict).inc(count)
        for (dependency, kind), units in result.costs.items():
            metrics.cost_units.labels(dependency, kind).inc(units)
        metrics.intake_messages.labels("accepted").inc(result.accepted)
        metrics.intake_messages.labels("duplicate").inc(result.duplicates)
        if result.pages:
            metrics.pages_loaded.inc(result.pages)
        if result.write_seconds is not None:
            metrics.tick_write.observe(result.write_seconds)

    def lingered(self) -> None:
        """The loop waited a moment before a tick, to make its statement bigger (service/linger.py)."""
        self.metrics.tick_lingers.inc()

    def tick(
        self, messages: int, started: float, scheduler: Scheduler, *, first_arrival: float | None = None
    ) -> None:
        """After every tick: its duration and size, how long its first delivery waited for it
        (`first_arrival`: the inbox's perf_counter time), and the gauges of every dependency if
        they are `GAUGES_EVERY` old (else `refresh_if_stale` sets them when the loop idles)."""
        metrics = self.metrics
        ended = time.perf_counter()
        metrics.tick_seconds.observe(ended - started)
        if messages:
            metrics.tick_messages.observe(messages)
        if first_arrival is not None:
            metrics.tick_wait.observe(max(started - first_arrival, 0.0))
        for (dependency, limit), count in scheduler.drain_shadow().items():  # counts: never deferred
            metrics.shadow_held_back.labels(dependency, limit).inc(count)
        if ended - self._gauges_at >= GAUGES_EVERY:
            self.gauges(scheduler)
        else:
            self._stale = True

    def refresh_if_stale(self, scheduler: Scheduler) -> None:
        """Before the loop waits for input: the gauges a busy stretch left behind, set now."""
        if self._stale:
            self.gauges(scheduler)

    def gauges(self, scheduler: Scheduler) -> None:
        """Every dependency's gauges: its backlog, gates, steering, adaptive and rate limits."""
        self._gauges_at, self._stale = time.perf_counter(), False
        metrics, put = self.metrics, self._put
        for stats in scheduler.stats():
            put(metrics.held, stats.held, stats.dependency)
            put(metrics.waiting, stats.ready, stats.dependency, "ready")
            put(metrics.waiting, stats.stored, stats.dependency, "stored")
            put(metrics.waiting, stats.delayed, stats.dependency, "delayed")
            put(metrics.active_scopes, stats.scopes, stats.dependency)
        clock = scheduler.clock
        for gate in scheduler.gate_states():
            put(metrics.circuit_state, CIRCUIT_LEVELS[gate.circuit.state.value], gate.dependency)
            paused = gate.pause_until is not None and clock < gate.pause_until
            steering = scheduler.steering(gate.dependency).in_force(clock)  # `janus pause`, `override`
            put(metrics.paused, 1 if paused or steering.pause is not None else 0, gate.dependency)
            self.steering(steering)
        for dependency, parked in scheduler.retry_budget_parked().items():
            put(metrics.retry_budget_parked, parked, dependency)
        for dependency, share in scheduler.recovery_shares().items():
            put(metrics.recovery_ramp, share, dependency)
        self.adaptive(scheduler.adaptive_views())
        self.limits(scheduler, clock)

    def adaptive(self, views: Mapping[str, AdaptiveView]) -> None:
        """The adaptive limits in force, and the signal that moved them last (one series each)."""
        metrics = self.metrics
        for dependency in set(self._adaptive) - set(views):  # adaptation turned off
            self._forget(metrics.adaptive_rate, dependency)
            self._forget(metrics.adaptive_concurrency, dependency)
            self._forget(metrics.adaptive_changed, dependency, self._adaptive.pop(dependency))
        for dependency, view in views.items():
            if view.rate is not None:
                self._put(metrics.adaptive_rate, view.rate, dependency)
            if view.concurrency is not None:
                self._put(metrics.adaptive_concurrency, view.concurrency, dependency)
            signal = view.signal.value if view.signal is not None else "none"
            old = self._adaptive.get(dependency)
            if old is not None and old != signal:
                self._forget(metrics.adaptive_changed, dependency, old)
            self._adaptive[dependency] = signal
            self._put(metrics.adaptive_changed, view.changed_at, dependency, signal)

    def steering(self, steering: Steering) -> None:
        """An operator's pause and override in force: who, why, and until when."""
        metrics, dependency = self.metrics, steering.dependency
        self._put(metrics.overridden, 0 if steering.override is None else 1, dependency)
        for kind, hand in (("pause", steering.pause), ("override", steering.override)):
            by = None if hand is None else hand.by
            old = self._steered.get((dependency, kind))
            if old is not None and old != by:
                self._forget(metrics.steering, dependency, kind, old)
                del self._steered[(dependency, kind)]
            if hand is not None and by is not None:
                self._steered[(dependency, kind)] = by
                self._put(
                    metrics.steering, math.inf if hand.until is None else hand.until, dependency, kind, by
                )

    def limits(self, scheduler: Scheduler, now: float) -> None:
        """Each dependency's limits, their use, and what decides its next admission (O(dependencies))."""
        metrics, put = self.metrics, self._put
        for lane in scheduler.limits(now):
            dependency = lane.dependency
            in_force = {rate.limit for rate in lane.rates}
            for gone in self._rates.get(dependency, set()) - in_force:
                for gauge in (metrics.rate_limit, metrics.rate_window, metrics.rate_used):
                    self._forget(gauge, dependency, gone)
            self._rates[dependency] = in_force
            for rate in lane.rates:
                put(metrics.rate_limit, rate.count, dependency, rate.limit)
                put(metrics.rate_window, rate.window, dependency, rate.limit)
                put(metrics.rate_used, rate.used, dependency, rate.limit)
            if lane.concurrency is not None:
                put(metrics.concurrency_limit, lane.concurrency, dependency)
                self._capped.add(dependency)
            elif dependency in self._capped:
                self._forget(metrics.concurrency_limit, dependency)
                self._capped.discard(dependency)
            blocked = lane.blocked
            # An adaptive limit's text moves every round: the label keeps only its kind.
            shown = None if blocked is None else (blocked.reason.value, _stable(blocked.limit))
            if shown != self._blocked.get(dependency):
                old = self._blocked.pop(dependency, None)
                if old is not None:
                    metrics.blocked.remove(dependency, *old)
                if shown is not None:
                    metrics.blocked.labels(dependency, *shown).set(1)
                    self._blocked[dependency] = shown
            until = 0.0 if blocked is None else (math.inf if blocked.until is None else blocked.until)
            put(metrics.next_admission, until, dependency)

    def _put(self, metric: Gauge, value: float, *labels: str) -> None:
        """Set a gauge only if its value changed: with many dependencies most do not change in a
        tick, and comparing costs far less than `set()` (which takes the value's lock)."""
        key = (metric, labels)
        if self._values.get(key) != value:
            self._values[key] = value
            self._gauge(metric, *labels).set(value)

    def _forget(self, metric: Gauge, *labels: str) -> None:
        """Take a series away (a limit no longer in force), and what _put knows of it."""
        key = (metric, labels)
        self._values.pop(key, None)
        self._gauges.pop(key, None)
        with contextlib.suppress(KeyError):  # never set in this process
            metric.remove(*labels)

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
                f"{source}:{reason}",
                f"set aside a message from {source}: {reason}: {item.detail}",
                count,
                source=source,
                reason=reason,
                job_id=job_id_of(item),
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
            log.warning(
                "the broker refused %d outcome messages; they stay in the outbox and are published again",
                len(refused),
            )

    def gate_events(self, events: Iterable[GateEvent]) -> None:
        """Circuit changes, pauses and clamped retry_after values: logged and counted."""
        metrics = self.metrics
        for event in events:
            metrics.gate_events.labels(event.dependency, event.kind).inc()
            if event.kind == "retry_after_clamped":
                self.throttled.warn(
                    f"clamped:{event.dependency}",
                    f"{event.dependency}: {event.detail}",
                    dependency=event.dependency,
                    kind=event.kind,
                )
            else:
                level = logging.WARNING if event.kind in ("circuit_open", "paused") else logging.INFO
                log.log(
                    level,
                    "%s: %s (%s)",
                    event.dependency,
                    event.kind.replace("_", " "),
                    event.detail,
                    extra={"dependency": event.dependency, "kind": event.kind},
                )

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
            took = 0.0
            started = time.monotonic()
            self.limits(scheduler(), clock())
            took += time.monotonic() - started
            for dependency in list(scheduler().policies):
                # One dependency at a time, letting ticks run in between: the loop is never held
                # for the whole scan (O(scopes)), only for one dependency's part of it.
                await asyncio.sleep(0)
                started = time.monotonic()
                core = scheduler()  # a rebuild may have replaced it meanwhile
                if core.knows(dependency):
                    self.scope_lane(core, dependency, clock())
                took += time.monotonic() - started
            await asyncio.sleep(max(SCOPE_METRICS_EVERY, SCOPE_METRICS_SHARE * took))

    def scopes(self, scheduler: Scheduler, now: float) -> None:
        """Per-scope gauges for the largest backlogs only, and the waiting jobs by reason (O(scopes):
        not per tick, see SCOPE_METRICS_SHARE); the limits again, for a leader that is idle."""
        self.limits(scheduler, now)
        for dependency in scheduler.policies:
            self.scope_lane(scheduler, dependency, now)

    def scope_lane(self, scheduler: Scheduler, dependency: str, now: float) -> None:
        """The per-scope gauges and the waiting jobs by reason of one dependency (O(its scopes))."""
        metrics = self.metrics
        scope_gauges = (
            metrics.scope_waiting,
            metrics.scope_held,
            metrics.scope_admitted,
            metrics.scope_oldest_waiting,
        )
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
        by_reason = scheduler.waiting_by_reason(dependency, now)
        for reason in SHOWN_REASONS:
            self._put(metrics.waiting_by_reason, by_reason[reason], dependency, reason.value)
        oldest = scheduler.oldest_waiting_since(dependency)
        metrics.oldest_waiting.labels(dependency).set(max(0.0, now - oldest) if oldest is not None else 0.0)
