"""Adaptive limits on a virtual clock: the limit against the API's capacity over time, and what it costs.

The production `Scheduler` (core/adaptive.py wired in) against the simulated APIs of
`janus.simulate.adaptive_api`, seconds of traffic in milliseconds of CPU:

1. rate: C = 40 calls per 1 s sliding window, 20 from 40 s, 40 again from 70 s; max_rate 1000/1s;
2. rate at scale: C = 400, 200 from 40 s, 400 from 70 s;
3. concurrency: 0.1 s per call up to K = 10 at once, x (n/K)^3 beyond; max_concurrency 200;
4. concurrency at scale: K = 40.

The baseline, in the same run, is the static limit an operator would have set from the
documented capacity (C, or K), with no adaptation: right until the capacity moves. Figures are
ratios to it (goodput) and the throttled share; the PNG shows limit and capacity over time.

    .venv/bin/python -m benchmarks.adaptive [--plot docs/img/adaptive.png]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from janus.core.policy import AdaptivePolicy, DependencyPolicy, RateLimit
from janus.simulate.adaptive_api import LatencyApi, Second, SlidingApi, policy, run

SECONDS = 110


def stepped(high: int, low: int) -> Callable[[float], int]:
    return lambda now: low if 40 <= now < 70 else high


def static(limits: DependencyPolicy, **changes: object) -> DependencyPolicy:
    from dataclasses import replace

    return replace(limits, adaptive=None, **changes)  # type: ignore[arg-type]


def share(seconds: list[Second], start: int, end: int) -> tuple[float, float]:
    part = [s for s in seconds if start <= s.at < end]
    ok = sum(s.ok for s in part)
    throttled = sum(s.throttled for s in part)
    return throttled / max(1, ok + throttled), ok / max(1, len(part))


def p99(seconds: list[Second], start: int) -> float:
    latencies = sorted(latency for s in seconds if s.at >= start for latency in s.latencies)
    return latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")


def rate_scenario(high: int, low: int) -> tuple[list[Second], list[str]]:
    capacity = stepped(high, low)
    adaptive_policy = policy(AdaptivePolicy(max_rate=1000.0 if high < 1000 else 10 * high))
    began = time.perf_counter()
    adaptive = run(
        adaptive_policy, seconds=SECONDS, sliding=SlidingApi(capacity), backlog=max(2000, 20 * high)
    )
    cpu = time.perf_counter() - began
    fixed = static(adaptive_policy, rate_limits=(RateLimit(count=high, window=1.0),), admission_ttl=0.1)
    baseline = run(fixed, seconds=SECONDS, sliding=SlidingApi(capacity), backlog=max(2000, 20 * high))
    lines = [f"rate, C = {high} -> {low} at 40 s -> {high} at 70 s ({SECONDS} s simulated in {cpu:.1f} s):"]
    for name, (start, end) in {
        f"C={high}, 10-40 s": (10, 40),
        f"C={low}, 50-70 s": (50, 70),
        f"C={high} again, 80-110 s": (80, 110),
    }.items():
        a_share, a_good = share(adaptive, start, end)
        b_share, b_good = share(baseline, start, end)
        lines.append(
            f"  {name}: adaptive {a_good:.1f}/s ({a_good / (high if 'again' in name or '10-40' in name else low):.0%} of C), "
            f"{a_share:.1%} throttled; static {high}/1s {b_good:.1f}/s, {b_share:.1%} throttled; "
            f"goodput ratio {a_good / max(b_good, 1e-9):.2f}"
        )
    return adaptive, lines


def concurrency_scenario(knee: int) -> tuple[list[Second], list[str]]:
    adaptive_policy = policy(AdaptivePolicy(max_concurrency=200))
    adaptive = run(adaptive_policy, seconds=60, latency=LatencyApi(knee=knee))
    baseline = run(static(adaptive_policy, concurrency=knee), seconds=60, latency=LatencyApi(knee=knee))
    limits = [s.concurrency_limit or 0 for s in adaptive if s.at >= 30]
    # Slow start's overshoot: the highest limit before 30 s, and when the knee was first reached.
    peak = max(s.concurrency_limit or 0 for s in adaptive if s.at < 30)
    reached = min((s.at for s in adaptive if (s.concurrency_limit or 0) >= knee), default=None)
    _, a_good = share(adaptive, 30, 60)
    _, b_good = share(baseline, 30, 60)
    unloaded = 0.1 * 1.1  # one call alone: 0.1 s, +-10 % of noise
    lines = [
        f"concurrency, 0.1 s per call up to K = {knee}, x (n/K)^3 beyond: settles at "
        f"{sum(limits) / len(limits):.1f} (range {min(limits)}-{max(limits)}) from 30 s; p99 "
        f"{p99(adaptive, 30):.3f} s = {p99(adaptive, 30) / unloaded:.2f}x the unloaded p99; "
        f"throughput {a_good:.0f}/s against {b_good:.0f}/s at the static concurrency K (ratio {a_good / b_good:.2f}); "
        f"slow start peaks at {peak} ({peak / knee:.2f} K), reaches K at {reached} s"
    ]
    return adaptive, lines


def plot(path: str, panels: list[tuple[str, list[Second], str]]) -> None:
    from janus.simulate.plot import require_matplotlib

    plt = require_matplotlib()
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels)))
    for axis, (title, seconds, kind) in zip(axes, panels, strict=True):
        at = [s.at for s in seconds]
        limit = [(s.rate_limit if kind == "rate" else s.concurrency_limit) or 0 for s in seconds]
        axis.plot(at, [s.capacity for s in seconds], label="capacity (C, or the knee K)", color="black")
        axis.plot(at, limit, label=f"adaptive {kind} limit", color="tab:blue")
        if kind == "rate":
            axis.plot(at, [s.ok for s in seconds], label="successes/s", color="tab:green", alpha=0.6)
            axis.plot(at, [s.throttled for s in seconds], label="throttled/s", color="tab:red", alpha=0.6)
        axis.set_title(title, fontsize=9)
        axis.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("seconds (virtual clock)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plot", help="write the limit-against-capacity PNG here")
    args = parser.parse_args()
    panels = []
    for high, low in ((40, 20), (400, 200)):
        seconds, lines = rate_scenario(high, low)
        print("\n".join(lines))
        panels.append((f"rate: C {high} -> {low} -> {high}", seconds, "rate"))
    for knee in (10, 40):
        seconds, lines = concurrency_scenario(knee)
        print("\n".join(lines))
        panels.append((f"concurrency: knee K = {knee}", seconds, "concurrency"))
    if args.plot:
        plot(args.plot, panels)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
