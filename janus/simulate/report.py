"""What a simulation run means for each dependency and scope: figures, and the text `janus simulate` prints.

Reads an `Outcome` only. Waits are from a job's arrival to its first admission (what the policy
decides); makespan from the first arrival to the last job finished (succeeded or dead);
"time at a limit" is how long the dependency had jobs eligible that one of its own limits held
back (as `janus why` would name it), and per scope how long the scope had jobs waiting then.
"""

from __future__ import annotations

import bisect
import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from janus.core.policy import RateLimit
from janus.simulate.logs import DependencyLog, Outcome, ScopeLog

# Bucket widths the admissions table may use, in seconds: the smallest giving at most MAX_ROWS rows.
_WIDTHS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
MAX_ROWS = 12
MAX_SCOPE_COLUMNS = 6  # the scopes with the most jobs get a column; the others share one


@dataclass(frozen=True, kw_only=True, slots=True)
class Figures:
    """One dependency's or one scope's figures."""

    name: str
    jobs: int
    succeeded: int
    dead: int
    retries: int
    returned: int
    admissions: int
    first_arrival: float | None
    last_finished: float | None
    wait_p50: float | None
    wait_p99: float | None
    wait_max: float | None

    @property
    def makespan(self) -> float | None:
        if self.first_arrival is None or self.last_finished is None:
            return None
        return self.last_finished - self.first_arrival


def promised_windows(limit: RateLimit, admission_ttl: float) -> tuple[float, float]:
    """(the span over which the core counts a limit's admissions, `RateLimit.admission_window`;
    the window in which the workers' starts stay within COUNT): a worker starts an admission
    within admission_ttl, so starts hold over the span less the TTL, which is the limit's own
    window for a limit that counts starts."""
    span = limit.admission_window(admission_ttl)
    return span, span - admission_ttl


def percentile(ordered: Sequence[float], share: float) -> float | None:
    """Nearest rank on sorted values (the value below which `share` of them lie)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def figures(name: str, logs: Iterable[ScopeLog]) -> Figures:
    logs = list(logs)
    waits = sorted(w for log in logs for w in log.waits)
    arrivals = [log.arrived[0] for log in logs if log.arrived]
    finishes = [log.finished[-1] for log in logs if log.finished]
    return Figures(
        name=name,
        jobs=sum(len(log.arrived) for log in logs),
        succeeded=sum(log.succeeded for log in logs),
        dead=sum(log.dead for log in logs),
        retries=sum(log.retries for log in logs),
        returned=sum(log.returned for log in logs),
        admissions=sum(len(log.admitted) for log in logs),
        first_arrival=min(arrivals, default=None),
        last_finished=max(finishes, default=None),
        wait_p50=percentile(waits, 0.50),
        wait_p99=percentile(waits, 0.99),
        wait_max=waits[-1] if waits else None,
    )


def bucket_width(span: float) -> float:
    for width in _WIDTHS:
        if span / width <= MAX_ROWS:
            return float(width)
    return float(_WIDTHS[-1])


def counts_per_bucket(times: Sequence[float], width: float, buckets: int) -> list[int]:
    """How many of the sorted `times` fall in each [k × width, (k + 1) × width)."""
    counts = []
    low = 0
    for k in range(buckets):
        high = bisect.bisect_left(times, (k + 1) * width)
        counts.append(high - low)
        low = high
    return counts


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0s"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 600:
        return f"{value:.2f}s" if value < 10 else f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]


def _stretch(k: int, width: float) -> str:
    """The k-th stretch of `width` seconds, in one unit for the whole table."""
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if width >= size or unit == "s":
            return f"{k * width / size:g}{unit}-{(k + 1) * width / size:g}{unit}"
    raise AssertionError("unreachable")


def _rate(count: int, width: float) -> str:
    per_second = count / width
    return f"{per_second:.0f}" if per_second >= 100 else f"{per_second:.1f}"


def admissions_table(log: DependencyLog, end: float) -> list[str]:
    """Admissions per second in each stretch of time: the dependency, then its busiest scopes."""
    scopes = sorted(log.scopes.items(), key=lambda item: (-len(item[1].arrived), item[0]))
    shown, others = scopes[:MAX_SCOPE_COLUMNS], scopes[MAX_SCOPE_COLUMNS:]
    width = bucket_width(max(end, 1e-9))
    buckets = max(1, math.ceil(end / width - 1e-9))
    columns: list[tuple[str, list[int]]] = []
    for name, scope in shown:
        columns.append((name, counts_per_bucket(scope.admitted, width, buckets)))
    if others:
        merged = sorted(t for _, scope in others for t in scope.admitted)
        columns.append((f"{len(others)} others", counts_per_bucket(merged, width, buckets)))
    total = [sum(column[k] for _, column in columns) for k in range(buckets)]
    header = (
        ["admissions/s", "all", *(name for name, _ in columns)]
        if len(columns) > 1
        else ["admissions/s", "all"]
    )
    rows = [header]
    for k in range(buckets):
        row = [_stretch(k, width), _rate(total[k], width)]
        if len(columns) > 1:
            row += [_rate(column[k], width) for _, column in columns]
        rows.append(row)
    return _columns(rows)


def summary_rows(dependency: Figures, scopes: Sequence[Figures]) -> list[str]:
    rows = [["", "jobs", "done", "dead", "retries", "unused", "makespan", "wait p50", "p99", "max"]]
    for item in (dependency, *scopes):
        rows.append(
            [
                item.name,
                str(item.jobs),
                str(item.succeeded),
                str(item.dead),
                str(item.retries),
                str(item.returned),
                seconds(item.makespan),
                seconds(item.wait_p50),
                seconds(item.wait_p99),
                seconds(item.wait_max),
            ]
        )
    return _columns(rows)


def active_until(outcome: Outcome) -> float:
    """The last job finished, or the end of the run if some were left unfinished: the span to show."""
    if outcome.unfinished:
        return outcome.end
    ends = [
        scope.finished[-1]
        for log in outcome.dependencies.values()
        for scope in log.scopes.values()
        if scope.finished
    ]
    return max(ends, default=outcome.end)


def render(outcome: Outcome, *, seed: int, max_scopes: int = 20) -> str:
    lines = []
    span = active_until(outcome)
    for name, log in outcome.dependencies.items():
        if not (log.scopes or log.refused):
            continue
        policy = outcome.policies[name]
        limits = ", ".join(str(limit) for limit in policy.rate_limits) or "no rate limit"
        concurrency = policy.concurrency if policy.concurrency is not None else "unlimited"
        overall = figures(name, log.scopes.values())
        ranked = sorted(log.scopes.items(), key=lambda item: (-len(item[1].arrived), item[0]))
        scope_figures = [figures(f"  {scope}", [scope_log]) for scope, scope_log in ranked[:max_scopes]]
        lines.append(
            f"== {name}: {limits}; concurrency {concurrency}; admission ttl {policy.admission_ttl:g}s"
        )
        lines += [f"  {line}" for line in admissions_table(log, span)]
        lines.append("")
        lines += [f"  {line}" for line in summary_rows(overall, scope_figures)]
        if len(ranked) > max_scopes:
            lines.append(f"    ... and {len(ranked) - max_scopes} more scopes")
        calls = len(log.started)
        lines.append(
            f"  calls {calls}: {log.failed_calls} failed ({log.throttled} throttled beyond capacity, "
            f"{log.lease_cut} cut at the lease's end)"
        )
        at_limit = ", ".join(
            f"{limit} {seconds(spent)}"
            for limit, spent in sorted(log.at_limit.items(), key=lambda item: -item[1])
        )
        lines.append(f"  time at a limit: {at_limit or 'none'}")
        for scope, scope_log in ranked[:max_scopes]:
            if scope_log.at_limit:
                spent_by_limit = sorted(scope_log.at_limit.items(), key=lambda item: -item[1])
                told = ", ".join(f"{limit} {seconds(spent)}" for limit, spent in spent_by_limit)
                lines.append(f"    {scope}: {told}")
        if log.units_estimated or log.units_actual:
            lines.append(
                f"  units of the calls that reported a cost: estimated {log.units_estimated:,.0f}, "
                f"actual {log.units_actual:,.0f}"
            )
        if log.refused:
            lines.append(f"  set aside at intake: {len(log.refused)} jobs ({log.refused[0][2]})")
        pauses = [event for event in log.gate_events if event[1] in ("paused", "circuit_open")]
        if pauses:
            kinds = {kind: sum(1 for e in pauses if e[1] == kind) for kind in ("paused", "circuit_open")}
            lines.append(
                "  retry_after pauses: {paused}; circuit opened: {circuit_open} times".format(**kinds)
            )
        lines.append("")
    state = (
        "every job finished"
        if outcome.unfinished == 0
        else f"{outcome.unfinished} jobs unfinished at the end"
    )
    lines.append(
        f"{outcome.jobs} jobs over {seconds(span)} of simulated time (seed {seed}): {state}; "
        f"{outcome.ticks} ticks"
    )
    return "\n".join(lines)


TIMELINE_HEADER = ("t", "event", "job_id", "dependency", "scope", "attempt", "detail")


def write_timeline(outcome: Outcome, out: TextIO | Path) -> int:
    """Every arrival, admission, start, finish, unused admission and dead job, as CSV; how many rows."""
    rows = outcome.timeline
    if rows is None:
        raise ValueError("the simulation kept no timeline: run it with timeline=True")
    if isinstance(out, Path):
        with out.open("w", newline="", encoding="utf-8") as file:
            return write_timeline(outcome, file)
    writer = csv.writer(out)
    writer.writerow(TIMELINE_HEADER)
    for t, event, job_id, dependency, scope, attempt, detail in rows:
        writer.writerow((f"{t:.6f}", event, job_id, dependency, scope, attempt, detail))
    return len(rows)
