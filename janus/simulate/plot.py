"""`janus simulate --plot`: per dependency, admissions per second against its rate limits, and each
scope's backlog (jobs arrived and not finished) over time.

matplotlib is an optional extra (`pip install 'janus-admission[bench]'`): Janus itself never
needs it, so it is imported here only, and its absence is one clear error.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from janus.errors import ConfigError
from janus.simulate.logs import Outcome, ScopeLog
from janus.simulate.report import active_until

MAX_SCOPE_LINES = 6
POINTS = 200  # bins of the admissions curve


def require_matplotlib() -> Any:
    """The matplotlib.pyplot module, on a non-interactive backend; a clear error if it is missing."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(
            "--plot needs matplotlib, which Janus does not install by default: "
            "pip install 'janus-admission[bench]' (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bin_width(end: float, windows: Sequence[float], points: int = POINTS) -> float:
    """Bins of a whole number of the shortest rate window: a sliding limit of COUNT per T allows at
    most k × COUNT in any bin of k × T, so no bin shows more than the limit. Shorter bins would
    show the bursts within a window as rates above it."""
    span = max(end, 1e-9)
    if not windows:
        return span / points
    shortest = min(windows)
    return shortest * max(1, math.ceil(span / points / shortest))


def rate_curve(times: Sequence[float], end: float, width: float) -> tuple[list[float], list[float]]:
    """Events per second in bins of `width` over [0, end]: (bin centres, rates) of sorted `times`."""
    points = max(1, math.ceil(max(end, 1e-9) / width))
    centres, rates = [], []
    low = 0
    for k in range(points):
        high = bisect.bisect_left(times, (k + 1) * width)
        centres.append((k + 0.5) * width)
        rates.append((high - low) / width)
        low = high
    return centres, rates


def backlog_curve(log: ScopeLog, end: float, points: int = POINTS) -> tuple[list[float], list[int]]:
    """Jobs arrived and not finished (succeeded or dead), sampled at `points` + 1 instants."""
    xs = [end * k / points for k in range(points + 1)]
    arrived, finished = log.arrived, log.finished
    return xs, [bisect.bisect_right(arrived, x) - bisect.bisect_right(finished, x) for x in xs]


def plot(outcome: Outcome, path: Path) -> None:
    plt = require_matplotlib()
    shown = [(name, log) for name, log in outcome.dependencies.items() if log.scopes]
    rows = max(1, len(shown))
    figure, axes = plt.subplots(rows, 2, figsize=(12, 3.2 * rows), squeeze=False)
    end = max(active_until(outcome), 1e-9)
    for row, (name, log) in enumerate(shown):
        left, right = axes[row][0], axes[row][1]
        admitted = sorted(t for scope in log.scopes.values() for t in scope.admitted)
        width = bin_width(end, [limit.window for limit in outcome.policies[name].rate_limits])
        xs, ys = rate_curve(admitted, end, width)
        left.step(
            xs, ys, where="mid", label=f"admissions/s (per {width:g}s)", color="tab:blue", linewidth=1.2
        )
        top = max([*ys, *(limit.count / limit.window for limit in outcome.policies[name].rate_limits), 1.0])
        xs, ys = rate_curve(list(log.started), end, width)
        left.step(xs, ys, where="mid", label="calls started/s", color="tab:green", linewidth=0.8, alpha=0.7)
        for limit in outcome.policies[name].rate_limits:
            left.axhline(limit.count / limit.window, linestyle="--", color="tab:red", linewidth=1)
            left.annotate(
                f"limit {limit}",
                (0, limit.count / limit.window),
                textcoords="offset points",
                xytext=(4, 3),
                color="tab:red",
                fontsize=8,
            )
        left.set_title(f"{name}: admissions against its rate limits", fontsize=10)
        left.set_xlabel("simulated time (s)")
        left.set_ylabel("per second")
        left.legend(fontsize=8, loc="lower left")
        ranked = sorted(log.scopes.items(), key=lambda item: (-len(item[1].arrived), item[0]))
        for scope, scope_log in ranked[:MAX_SCOPE_LINES]:
            bx, by = backlog_curve(scope_log, end)
            right.plot(bx, by, label=scope, linewidth=1.2)
        if len(ranked) > MAX_SCOPE_LINES:
            right.plot([], [], " ", label=f"+{len(ranked) - MAX_SCOPE_LINES} scopes not drawn")
        right.set_title(f"{name}: backlog per scope (arrived, not finished)", fontsize=10)
        right.set_xlabel("simulated time (s)")
        right.set_ylabel("jobs")
        right.legend(fontsize=8, loc="upper right")
        left.set_ylim(0, nice_ceiling(top * 1.2))
        right.set_ylim(bottom=0)
        for axis in (left, right):
            axis.set_xlim(0, end * 1.01)
            axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def nice_ceiling(value: float) -> float:
    """1, 2 or 5 times a power of ten, at least `value` (axis limits)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)
