"""The picture of `janus status` and of the status page, read from the metrics registry.

Every number here is a sample /metrics serves at the same moment: there is no second source to
drift from the first, and building the picture asks nothing of the leader's event loop (it runs
on the HTTP server's own loop and thread; the leader only sets the gauges, as it does for a
scrape). It does share the interpreter lock, so a refresh reads the samples without a sample
object each (janus/api/exposition.py) and /status builds and encodes again only the lanes whose
samples changed (KeptPicture): benchmarks/status_cost.py measures what it costs.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Coroutine
from itertools import compress, groupby
from operator import itemgetter, ne
from typing import Any

from prometheus_client import CollectorRegistry

from janus.api.changes import RecentChanges
from janus.api.exposition import Series, read

LeaderAnswer = Callable[[], Coroutine[Any, Any, dict[str, Any] | None]]
# Member mode: who leads which dependency, as last read from the database (janus/service/owners.py).
OwnersAnswer = Callable[[], dict[str, Any] | None]

INFINITIES = (math.inf, -math.inf)
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


class Samples:
    """The registry's samples of the READ metrics, by name, then dependency, then the labels asked
    for. Read without a sample object per series (janus/api/exposition.py), and each metric
    indexed once, on its first lookup: a refresh touches each series a few times, not per lookup."""

    def __init__(self, series: dict[str, Series]) -> None:
        self._series = series
        self._indexed: dict[tuple[str, ...], dict[str | None, dict[Any, float]]] = {}
        self._exact: dict[tuple[str, ...], Callable[[tuple[str, ...]], float | None]] = {}

    @classmethod
    def of(cls, registry: CollectorRegistry) -> Samples:
        return cls(read(registry, READ))

    def value(self, name: str, dependency: str | None = None) -> float | None:
        """The sample of a metric labelled by dependency alone (or by nothing, dependency None)."""
        return self.by(name, dependency).get(())

    def by(self, name: str, dependency: str | None, *labels: str) -> dict[Any, float]:
        """The dependency's samples of `name` by the value of the one label asked for (by a tuple
        of their values if several, by () if none), in the registry's order. A sample with other
        labels than `dependency` and these is left out."""
        indexed = self._indexed.get((name, *labels))
        if indexed is None:
            indexed = self._indexed[(name, *labels)] = self._index(name, labels)
        return indexed.get(dependency, {})

    def _index(self, name: str, labels: tuple[str, ...]) -> dict[str | None, dict[Any, float]]:
        series = self._series.get(name)
        if series is None:
            return {}
        names = series.labelnames
        at = names.index("dependency") if "dependency" in names else None
        if set(names) != set(labels) | ({"dependency"} if at is not None else set()):
            return {}
        if at is None:
            one: dict[Any, float] = {}
            for key, value in zip(series.keys, series.values, strict=True):
                one[tuple(key[names.index(label)] for label in labels)] = value
            return {None: one}
        found: dict[str | None, dict[Any, float]] = {}
        keys, values = series.keys, series.values
        if not labels:
            return {key[at]: {(): value} for key, value in zip(keys, values, strict=True)}
        where = [names.index(label) for label in labels]
        # The registry keeps a dependency's series together, mostly: take them run by run,
        # grouped and zipped in C rather than one by one.
        label_of = itemgetter(*where)  # one label: its value; several: a tuple of them
        start = 0
        for dependency, run in groupby(keys, itemgetter(at)):
            in_run = list(run)
            end = start + len(in_run)
            found.setdefault(dependency, {}).update(
                zip(map(label_of, in_run), values[start:end], strict=True)
            )
            start = end
        return found

    def exact(self, name: str, *labels: str) -> Callable[[tuple[str, ...]], float | None]:
        """A lookup of `name`'s sample by the values of exactly these labels, in this order."""
        getter = self._exact.get((name, *labels))
        if getter is None:
            getter = self._exact[(name, *labels)] = self._exact_getter(name, labels)
        return getter

    def _exact_getter(self, name: str, labels: tuple[str, ...]) -> Callable[[tuple[str, ...]], float | None]:
        series = self._series.get(name)
        if series is None or sorted(series.labelnames) != sorted(labels):
            return lambda key: None
        flat = dict(zip(series.keys, series.values, strict=True))
        if series.labelnames == labels:
            return flat.get
        order = [labels.index(label) for label in series.labelnames]
        return lambda key: flat.get(tuple(key[i] for i in order))

    def dependencies(self) -> list[str]:
        return sorted(d for d in self._index("janus_held_slots", ()) if d is not None)


def _number(value: float | None) -> float | int | None:
    """JSON has no infinities, and counts read better without '.0'."""
    if value is None or value != value or value in INFINITIES:  # NaN is not equal to itself
        return None
    return int(value) if value == int(value) else value


def lane(samples: Samples, dependency: str, now: float) -> dict[str, Any]:
    """One dependency as `janus status` shows it."""
    d, by, value = dependency, samples.by, samples.value
    waiting_kinds = by("janus_waiting_jobs", d, "kind")
    by_reason = {
        reason: int(count)
        for reason, count in by("janus_waiting_jobs_by_reason", d, "reason").items()
        if count
    }
    blocked = next(iter(by("janus_dependency_blocked", d, "reason", "limit")), None)
    next_at = value("janus_next_admission_timestamp_seconds", d)
    windows = samples.exact("janus_rate_limit_window_seconds", "dependency", "limit")
    used = samples.exact("janus_rate_window_admissions", "dependency", "limit")
    rates = [
        {
            "limit": limit,
            "count": _number(count),
            "window_seconds": _number(windows((d, limit))),
            "used": _number(used((d, limit))),
        }
        for limit, count in sorted(by("janus_rate_limit_count", d, "limit").items())
    ]
    held = samples.exact("janus_scope_held_slots", "dependency", "scope")
    admitted = samples.exact("janus_scope_admitted_jobs", "dependency", "scope")
    oldest = samples.exact("janus_scope_oldest_waiting_seconds", "dependency", "scope")
    scopes: list[dict[str, Any]] = [
        {
            "scope": scope,
            "waiting": _number(waiting),
            "held": _number(held(key)),
            "admitted": _number(admitted(key)),
            "oldest_waiting_seconds": _number(oldest(key)),
        }
        for scope, waiting in by("janus_scope_waiting_jobs", d, "scope").items()
        for key in ((d, scope),)
    ]
    scopes.sort(key=lambda scope: (-(scope["waiting"] or 0), str(scope["scope"])))
    transitions = {
        verdict: _number(count) for verdict, count in by("janus_job_transitions_total", d, "verdict").items()
    }
    gate_events = {kind: _number(count) for kind, count in by("janus_gate_events_total", d, "kind").items()}
    steering: dict[str, Any] = {"pause": None, "override": None}
    for (kind, who), until in by(
        "janus_dependency_steering_until_timestamp_seconds", d, "kind", "by"
    ).items():
        # until None: a pause until `janus resume`
        steering[kind] = {"by": who, "until": _number(until)}
    body: dict[str, Any] = {
        "dependency": d,
        "rates": rates,
        "concurrency": _number(value("janus_concurrency_limit", d)),
        "held": _number(value("janus_held_slots", d)),
        "waiting": _number(sum(waiting_kinds.values())),
        "waiting_by_reason": by_reason,
        "oldest_waiting_seconds": _number(value("janus_oldest_waiting_seconds", d)),
        "blocked": None,
        "circuit": {0: "closed", 1: "half-open", 2: "open"}.get(
            int(value("janus_circuit_state", d) or 0), "closed"
        ),
        "paused": bool(value("janus_dependency_paused", d)),
        "overridden": bool(value("janus_dependency_overridden", d)),
        "steering": steering,  # an operator's pause and override in force: who, why, until
        "ready_consumers": _number(value("janus_ready_consumers", d)),
        "admissions_total": _number(value("janus_admissions_total", d) or 0.0),
        "transitions": transitions,
        "gate_events": gate_events,  # pauses and circuit changes since this process started
        "top_scopes": scopes,
    }
    changed = next(iter(samples.by("janus_adaptive_changed_timestamp_seconds", d, "signal").items()), None)
    if changed is not None:  # a dependency with adaptive limits (docs/configuration.md)
        signal, at = changed
        body["adaptive"] = {
            "rate": _number(samples.value("janus_adaptive_rate", d)),
            "concurrency": _number(samples.value("janus_adaptive_concurrency", d)),
            "signal": None if signal == "none" else signal,
            "changed_seconds_ago": _number(max(0.0, now - at)) if signal != "none" else None,
        }
    if blocked is not None:
        reason, limit = blocked
        wait = None if next_at is None or math.isinf(next_at) else max(0.0, next_at - now)
        body["blocked"] = {"reason": reason, "limit": limit, "lifts_in_seconds": wait}
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


def _changed(before: Series | None, after: Series) -> set[str] | None:
    """The dependencies whose samples of one metric differ between two reads; None: all of them
    (a metric new to this read, or whose label names changed)."""
    if "dependency" not in after.labelnames:
        return set()  # in no lane (the process's own figures are read every time)
    if before is None or before.labelnames != after.labelnames:
        return None
    if before.keys == after.keys:
        if before.values == after.values:
            return set()
        at = after.labelnames.index("dependency")
        return set(map(itemgetter(at), compress(after.keys, map(ne, after.values, before.values))))
    at = after.labelnames.index("dependency")
    was = dict(zip(before.keys, before.values, strict=True))
    is_ = dict(zip(after.keys, after.values, strict=True))
    changed = {key[at] for key in was.keys() ^ is_.keys()}
    changed.update(key[at] for key, value in is_.items() if was.get(key, value) != value)
    return changed


class KeptPicture:
    """The picture as /status encodes it, kept between refreshes: a dependency's lane is built
    and encoded again only when one of its samples changed, or when it shows a wait that counts
    down. Comparing a metric's values with the last refresh's is one list comparison; only the
    dependencies whose samples differ are built again. One refresh at a time (the HTTP thread)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._series: dict[str, Series] = {}
        self._lanes: dict[str, tuple[bool, bytes]] = {}  # per dependency: counts down?, its JSON

    def encoded(self, now: float, recent_changes: list[Any]) -> tuple[bool, bytes]:
        """(leading, the JSON of `picture` and, if leading, the recent changes)."""
        series = read(self._registry, READ)
        dirty: set[str] | None = set()
        for name, after in series.items():
            changed = _changed(self._series.get(name), after)
            dirty = None if changed is None or dirty is None else dirty | changed
        if self._series.keys() != series.keys():
            dirty = None
        self._series = series
        samples = Samples(series)
        about = process(samples)
        fragments: list[bytes] = []
        if about["leading"]:
            lanes: dict[str, tuple[bool, bytes]] = {}
            for dependency in samples.dependencies():
                kept = self._lanes.get(dependency)
                if kept is None or kept[0] or dirty is None or dependency in dirty:
                    body = lane(samples, dependency, now)
                    blocked = body["blocked"]
                    counts_down = blocked is not None and blocked["lifts_in_seconds"] is not None
                    kept = (counts_down, json.dumps(body).encode())
                lanes[dependency] = kept
                fragments.append(kept[1])
            self._lanes = lanes
        else:
            self._lanes = {}
        head = json.dumps({"time": now, "process": about}).encode()[:-1]  # its closing brace left off
        tail = json.dumps(recent_changes if about["leading"] else []).encode()
        return bool(about["leading"]), b"".join(
            (head, b', "dependencies": [', b", ".join(fragments), b'], "recent_changes": ', tail, b"}")
        )


class StatusBoard:
    """What GET /status answers (from the HTTP server's thread): the leader's picture; a
    standby's says who leads instead (`who_leads` runs on the event loop: it asks the database).
    With `owners` (member mode), every answer adds "owners": which member leads which
    dependency, the last read of the database (no query per request)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        loop: asyncio.AbstractEventLoop | None = None,
        who_leads: LeaderAnswer | None = None,
        changes: RecentChanges | None = None,
        owners: OwnersAnswer | None = None,
    ) -> None:
        self.registry = registry
        self._owners = owners
        self.changes = changes if changes is not None else RecentChanges()
        self._loop = loop
        self._who_leads = who_leads
        self._kept = KeptPicture(registry)

    async def answer(self) -> tuple[bool, bytes]:
        """On the HTTP server's own loop: the picture is built there (its JSON); only a standby's
        question of who leads goes to the service's loop (it reads the database)."""
        # The leader's copy of the recent changes (janus/api/changes.py): no query per request.
        leading, encoded = self._kept.encoded(time.time(), self.changes.listed() or [])
        owners = self._owners() if self._owners is not None else None
        if owners is not None:  # an added key: the picture's own keys stay as they are
            encoded = encoded[:-1] + b', "owners": ' + json.dumps(owners).encode() + b"}"
        if leading or self._who_leads is None or self._loop is None:
            return True, encoded
        body = json.loads(encoded)  # a standby's: no lanes, and who leads
        try:
            future = asyncio.run_coroutine_threadsafe(self._who_leads(), self._loop)
            body["leader"] = await asyncio.wait_for(asyncio.wrap_future(future), WHO_LEADS_DEADLINE)
        except Exception as exc:  # reported in the answer, never raised into the server
            body["leader"] = {"error": f"could not tell who leads: {exc or type(exc).__name__}"}
        return True, json.dumps(body).encode()
