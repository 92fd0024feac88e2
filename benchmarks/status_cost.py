"""What watching Janus costs its leader: with 10,000 active scopes over 100 dependencies, the
event-loop time of the gauges the loop sets, and of a scrape of /metrics and a refresh of /status
(the page and `janus status`).

No broker, no database: the production core (janus.core.scheduler) with 100 dependencies (two
rate limits, a concurrency limit and a scope cap each) and 100 scopes each with jobs waiting
and held, the production Observer and Metrics, and the production HTTP server.

Figures (median and max of --repeat runs, CPU milliseconds of the thread that runs them):
- tick gauges: `Observer.tick` after a tick, on the loop (every dependency's gauges, limits included);
- scope scan: `Observer.scopes`, on the loop at most once a second (and at most 1/50 of its time);
- scrape, status: building /metrics and /status; both run on the HTTP server's thread, so they
  cost the loop only the interpreter lock they hold;
- loop lag: the loop runs a 1 ms sleeper throughout; the largest lateness it sees while a client
  scrapes /metrics and reads /status back to back, against the same loop with no client (same
  run): the event-loop time a scrape and a refresh really cost.

    .venv/bin/python -m benchmarks.status_cost [--dependencies 100] [--scopes 100] [--repeat 30]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable

from prometheus_client import generate_latest

from janus.api.http import serve
from janus.api.metrics import Metrics
from janus.api.status import StatusBoard, picture
from janus.core.policy import DependencyPolicy, FairnessPolicy, RateLimit
from janus.core.scheduler import Scheduler
from janus.service.gc_pauses import RUN_SWITCH_INTERVAL, RUN_THRESHOLDS
from janus.service.observe import Observer

JOBS_PER_SCOPE = 3


def build(dependencies: int, scopes: int) -> Scheduler:
    policies = [
        DependencyPolicy(
            name=f"dep-{d:03d}",
            lease_timeout=600.0,
            admission_ttl=30.0,
            concurrency=50,
            rate_limits=(RateLimit(count=100, window=1.0), RateLimit(count=2000, window=60.0)),
            fairness=FairnessPolicy(scope_concurrency=2),
        )
        for d in range(dependencies)
    ]
    scheduler = Scheduler(policies, random.Random(1))
    for policy in policies:
        for s in range(scopes):
            for j in range(JOBS_PER_SCOPE):
                scheduler.submit(
                    job_id=f"{policy.name}/s{s}/{j}",
                    dependency=policy.name,
                    scope=f"tenant-{s}",
                    payload=None,
                    now=1.0,
                )
    scheduler.admit(1.0)  # some held, windows partly used: every gauge has something to say
    scheduler.drain_changes()
    return scheduler


def timed(action: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and max CPU milliseconds of `repeat` calls (this thread's CPU time: on a shared
    machine, wall time would add whatever other processes took)."""
    runs = []
    for _ in range(repeat):
        started = time.thread_time()
        action()
        runs.append((time.thread_time() - started) * 1000)
    return statistics.median(runs), max(runs)


async def lag_while(client: Callable[[], None] | None, seconds: float) -> tuple[float, float]:
    """Largest and p99 lateness (ms) of a 1 ms sleeper for `seconds`, with `client` running in a thread."""
    loop = asyncio.get_running_loop()
    late: list[float] = []
    stop = threading.Event()
    worker = None
    if client is not None:

        def repeatedly() -> None:
            while not stop.is_set():
                client()

        worker = threading.Thread(target=repeatedly, daemon=True)
        worker.start()
    end = loop.time() + seconds
    while loop.time() < end:
        asked = loop.time()
        await asyncio.sleep(0.001)
        late.append((loop.time() - asked - 0.001) * 1000)
    stop.set()
    if worker is not None:
        await asyncio.to_thread(worker.join)
    late.sort()
    return late[-1], late[int(len(late) * 0.99)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dependencies", type=int, default=100)
    parser.add_argument("--scopes", type=int, default=100, help="per dependency")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=5.0, help="of each loop-lag measurement")
    args = parser.parse_args()
    gc.set_threshold(*RUN_THRESHOLDS)  # as `janus run` sets it (the switch interval is compared below)

    started = time.perf_counter()
    scheduler = build(args.dependencies, args.scopes)
    metrics = Metrics()
    observer = Observer(metrics)
    observer.tick(0, time.perf_counter(), scheduler)
    observer.scopes(scheduler, 1.0)
    registry = metrics.registry
    scrape = generate_latest(registry)
    series = sum(1 for line in scrape.splitlines() if line and not line.startswith(b"#"))
    print(
        f"{args.dependencies} dependencies x {args.scopes} scopes = {args.dependencies * args.scopes} active "
        f"scopes, {len(scheduler.stats())} lanes; set up in {time.perf_counter() - started:.1f} s"
    )
    print(f"/metrics: {series} series, {len(scrape) / 1024:.0f} KiB")

    rows = [
        ("tick gauges (loop)", lambda: observer.tick(0, time.perf_counter(), scheduler)),
        ("scope scan (loop, <= 1/s)", lambda: observer.scopes(scheduler, 1.0)),
        ("scrape /metrics (HTTP thread)", lambda: generate_latest(registry)),
        ("status /status (HTTP thread)", lambda: picture(registry)),
    ]
    print(f"{'what (CPU time)':<32} {'median ms':>10} {'max ms':>8}")
    for name, action in rows:
        median, worst = timed(action, args.repeat)
        print(f"{name:<32} {median:>10.2f} {worst:>8.2f}")

    loop = asyncio.get_running_loop()
    port = 19_000 + random.randrange(1000)
    server = serve("127.0.0.1", port, registry, loop, lambda: (True, {}), status=StatusBoard(registry, loop))
    base = f"http://127.0.0.1:{port}"

    def client() -> None:
        for path in ("/metrics", "/status"):
            with urllib.request.urlopen(base + path, timeout=10) as response:
                response.read()

    print(f"{'loop lag of a 1 ms sleeper':<42} {'max ms':>8} {'p99 ms':>8}")
    default = sys.getswitchinterval()
    try:
        quiet = await lag_while(None, args.seconds)
        print(f"{'no client (baseline)':<42} {quiet[0]:>8.2f} {quiet[1]:>8.2f}")
        for interval in (default, RUN_SWITCH_INTERVAL):
            sys.setswitchinterval(interval)
            busy = await lag_while(client, args.seconds)
            name = f"scrape + status, switch interval {interval * 1000:g} ms"
            print(
                f"{name:<42} {busy[0]:>8.2f} {busy[1]:>8.2f}   to baseline: "
                f"max {busy[0] / max(quiet[0], 1e-3):.1f}x, p99 {busy[1] / max(quiet[1], 1e-3):.1f}x"
            )
    finally:
        sys.setswitchinterval(default)
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
