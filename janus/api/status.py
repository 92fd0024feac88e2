"""The picture of `janus status` and of the status page, read from the metrics registry.

Every number here is a sample /metrics serves at the same moment: there is no second source to
drift from the first, and building the picture asks nothing of the leader's event loop (it runs
on the HTTP server's own loop and thread; the leader only sets the gauges, as it does for a
scrape). It does share the interpreter lock: benchmarks/status_cost.py measures what that costs.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from janus.api.changes import RecentChanges

Labels = tuple[tuple[str, str], ...]
LeaderAnswer = Callable[[], Coroutine[Any, Any, dict[str, Any] | None]]

WHO_LEADS_DEADLINE = 5.0  # seconds for a standby to read the lease from PostgreSQL
# The states, worst first: the first that applies is the dependency's state.
STATES = ("no worker", "circuit open", "paused", "circuit half-open", "throttled", "overridden", "ok")


# The metrics the picture reads: a refresh collects only these (a scrape collects everything).
READ = (
    "janus_is_leader",
    "janus_leader_epoch",
    "janus_event_loop_lag_seconds",
    "janus_recovering",
    "janus_held_slots",
    "janus_waiting_jobs",
    "janus_waiting_jobs_by_reason",
    "janus_dependency_blocked",
    "janus_next_admission_timestamp_seconds",
    "janus_rate_limit_count",
    "janus_rate_limit_window_seconds",
    "janus_rate_window_admissions",
    "janus_concurrency_limit",
    "janus_oldest_waiting_seconds",
    "janus_circuit_state",
    "janus_dependency_paused",
    "janus_dependency_overridden",
    "janus_dependency_steering_until_timestamp_seconds",
    "janus_ready_consumers",
    "janus_adaptive_rate",
    "janus_adaptive_concurrency",
    "janus_adaptive_changed_timestamp_seconds",
    "janus_admissions_total",
    "janus_job_transitions_total",
    "janus_gate_events_total",
    "janus_scope_waiting_jobs",
    "janus_scope_held_slots",
    "janus_scope_admitted_jobs",
    "janus_scope_oldest_waiting_seconds",
)


@dataclass(kw_only=True)
class Samples:
    """The registry's samples by name, then by dependency (None: the process's own), then labels."""

    by_name: dict[str, dict[str | None, dict[Labels, float]]] = field(default_factory=dict)

    @classmethod
    def of(cls, registry: CollectorRegistry) -> Samples:
        samples = cls()
        by_name = samples.by_name
        for metric in registry.restricted_registry(READ).collect():
            for sample in metric.samples:
                labels = sample.labels
                per_dependency = by_name.setdefault(sample.name, {})
                per_dependency.setdefault(labels.get("dependency"), {})[tuple(sorted(labels.items()))] = (
                    sample.value
                )
        return samples

    def value(self, name: str, **labels: str) -> float | None:
        found = self.by_name.get(name, {}).get(labels.get("dependency"), {})
        return found.get(tuple(sorted(labels.items())))

    def where(self, name: str, **labels: str) -> Iterable[tuple[dict[str, str], float]]:
        """Samples of `name` whose labels include `labels` (a `dependency` among them)."""
        for key, value in self.by_name.get(name, {}).get(labels.get("dependency"), {}).items():
            found = dict(key)
            if all(found.get(k) == v for k, v in labels.items()):
                yield found, value

    def dependencies(self) -> list[str]:
        return sorted(d for d in self.by_name.get("janus_held_slots", {}) if d is not None)


def _number(value: float | None) -> float | int | None:
    """JSON has no infinities, and counts read better without '.0'."""
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return int(value) if value == int(value) else value


def lane(samples: Samples, dependency: str, now: float) -> dict[str, Any]:
    """One dependency as `janus status` shows it."""
    d = dependency
    waiting_kinds = {
        labels["kind"]: value for labels, value in samples.where("janus_waiting_jobs", dependency=d)
    }
    by_reason = {
        labels["reason"]: int(value)
        for labels, value in samples.where("janus_waiting_jobs_by_reason", dependency=d)
        if value
    }
    blocked = next(iter(samples.where("janus_dependency_blocked", dependency=d)), None)
    next_at = samples.value("janus_next_admission_timestamp_seconds", dependency=d)
    rates = sorted(
        (
            {
                "limit": labels["limit"],
                "count": _number(count),
                "window_seconds": _number(
                    samples.value("janus_rate_limit_window_seconds", dependency=d, limit=labels["limit"])
                ),
                "used": _number(
                    samples.value("janus_rate_window_admissions", dependency=d, limit=labels["limit"])
                ),
            }
            for labels, count in samples.where("janus_rate_limit_count", dependency=d)
        ),
        key=lambda rate: str(rate["limit"]),
    )
    scopes: list[dict[str, Any]] = [
        {
            "scope": labels["scope"],
            "waiting": _number(waiting),
            "held": _number(samples.value("janus_scope_held_slots", dependency=d, scope=labels["scope"])),
            "admitted": _number(
                samples.value("janus_scope_admitted_jobs", dependency=d, scope=labels["scope"])
            ),
            "oldest_waiting_seconds": _number(
                samples.value("janus_scope_oldest_waiting_seconds", dependency=d, scope=labels["scope"])
            ),
        }
        for labels, waiting in samples.where("janus_scope_waiting_jobs", dependency=d)
    ]
    scopes.sort(key=lambda scope: (-(scope["waiting"] or 0), str(scope["scope"])))
    transitions = {
        labels["verdict"]: _number(value)
        for labels, value in samples.where("janus_job_transitions_total", dependency=d)
    }
    gate_events = {
        labels["kind"]: _number(value)
        for labels, value in samples.where("janus_gate_events_total", dependency=d)
    }
    steering: dict[str, Any] = {"pause": None, "override": None}
    for labels, until in samples.where("janus_dependency_steering_until_timestamp_seconds", dependency=d):
        # until None: a pause until `janus resume`
        steering[labels["kind"]] = {"by": labels["by"], "until": _number(until)}
    body: dict[str, Any] = {
        "dependency": d,
        "rates": rates,
        "concurrency": _number(samples.value("janus_concurrency_limit", dependency=d)),
        "held": _number(samples.value("janus_held_slots", dependency=d)),
        "waiting": _number(sum(waiting_kinds.values())),
        "waiting_by_reason": by_reason,
        "oldest_waiting_seconds": _number(samples.value("janus_oldest_waiting_seconds", dependency=d)),
        "blocked": None,
        "circuit": {0: "closed", 1: "half-open", 2: "open"}.get(
            int(samples.value("janus_circuit_state", dependency=d) or 0), "closed"
        ),
        "paused": bool(samples.value("janus_dependency_paused", dependency=d)),
        "overridden": bool(samples.value("janus_dependency_overridden", dependency=d)),
        "steering": steering,  # an operator's pause and override in force: who, why, until
        "ready_consumers": _number(samples.value("janus_ready_consumers", dependency=d)),
        "admissions_total": _number(samples.value("janus_admissions_total", dependency=d) or 0.0),
        "transitions": transitions,
        "gate_events": gate_events,  # pauses and circuit changes since this process started
        "top_scopes": scopes,
    }
    changed = next(iter(samples.where("janus_adaptive_changed_timestamp_seconds", dependency=d)), None)
    if changed is not None:  # a dependency with adaptive limits (docs/configuration.md)
        signal, at = changed[0]["signal"], changed[1]
        body["adaptive"] = {
            "rate": _number(samples.value("janus_adaptive_rate", dependency=d)),
            "concurrency": _number(samples.value("janus_adaptive_concurrency", dependency=d)),
            "signal": None if signal == "none" else signal,
            "changed_seconds_ago": _number(max(0.0, now - at)) if signal != "none" else None,
        }
    if blocked is not None:
        labels, _ = blocked
        wait = None if next_at is None or math.isinf(next_at) else max(0.0, next_at - now)
        body["blocked"] = {"reason": labels["reason"], "limit": labels["limit"], "lifts_in_seconds": wait}
    body["state"] = state(body)
    return body


def state(lane: dict[str, Any]) -> str:
    """ok / paused / circuit open / throttled ... (STATES): what an operator looks at first."""
    blocked = lane["blocked"]
    reason = blocked["reason"] if blocked is not None else None
    if reason == "no_worker" and lane["waiting"]:
        return "no worker"
    if lane["circuit"] == "open":
        return "circuit open"
    if lane["paused"]:
        return "paused"
    if lane["circuit"] == "half-open":
        return "circuit half-open"
    if reason is not None and lane["waiting"]:
        return "throttled"
    if lane["overridden"]:
        return "overridden"
    return "ok"


def process(samples: Samples) -> dict[str, Any]:
    return {
        "leading": bool(samples.value("janus_is_leader")),
        "epoch": _number(samples.value("janus_leader_epoch")),
        "event_loop_lag_seconds": _number(samples.value("janus_event_loop_lag_seconds")),
        "recovering": bool(samples.value("janus_recovering")),
    }


def picture(registry: CollectorRegistry, now: float | None = None) -> dict[str, Any]:
    """Everything `janus status` shows, from one collection of the registry (a leader's)."""
    samples = Samples.of(registry)
    now = time.time() if now is None else now
    about = process(samples)
    lanes = [lane(samples, d, now) for d in samples.dependencies()] if about["leading"] else []
    return {"time": now, "process": about, "dependencies": lanes}


class StatusBoard:
    """What GET /status answers (from the HTTP server's thread): the leader's picture; a
    standby's says who leads instead (`who_leads` runs on the event loop: it asks the database)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        loop: asyncio.AbstractEventLoop | None = None,
        who_leads: LeaderAnswer | None = None,
        changes: RecentChanges | None = None,
    ) -> None:
        self.registry = registry
        self.changes = changes if changes is not None else RecentChanges()
        self._loop = loop
        self._who_leads = who_leads

    async def answer(self) -> tuple[bool, dict[str, Any]]:
        """On the HTTP server's own loop: the picture is built there; only a standby's question of
        who leads goes to the service's loop (it reads the database)."""
        body = picture(self.registry)
        # The leader's copy of the recent changes (janus/api/changes.py): no query per request.
        body["recent_changes"] = (self.changes.listed() or []) if body["process"]["leading"] else []
        if not body["process"]["leading"] and self._who_leads is not None and self._loop is not None:
            try:
                future = asyncio.run_coroutine_threadsafe(self._who_leads(), self._loop)
                body["leader"] = await asyncio.wait_for(asyncio.wrap_future(future), WHO_LEADS_DEADLINE)
            except Exception as exc:  # reported in the answer, never raised into the server
                body["leader"] = {"error": f"could not tell who leads: {exc or type(exc).__name__}"}
        return True, body
