"""What watching Janus costs its leader: with 10,000 active scopes over 100 dependencies, the
event-loop time of the gauges the loop sets, and of a scrape of /metrics and a refresh of /status
(the page and `janus status`).

No broker, no database: the production core (janus.core.scheduler) with 100 dependencies (two
rate limits, a concurrency limit and a scope cap each) and 100 scopes each with jobs waiting
and held, the production Observer and Metrics (with the counters a leader that has admitted,
finished and paused jobs shows), and the production HTTP server.

Figures (median and max of --repeat runs, CPU milliseconds of the thread that runs them):
- tick gauges: `Observer.tick` after a tick, on the loop (every dependency's gauges, limits included);
- scope scan: `Observer.scopes`, on the loop at most once a second (and at most 1/50 of its time);
- scrape: the library's encoder (prometheus_client.generate_latest: the baseline), and what
  /metrics runs, after a scope scan changed every scope's age (what a scrape every 15 s meets) and
  with nothing changed;
- status: a refresh of /status, its picture and JSON: built afresh (`status.picture`), and as
  /status keeps it (`KeptPicture`) when every lane changed since the last and when none did.
Scrapes and refreshes run on the HTTP server's thread: they cost the loop the interpreter lock
they hold. So, last, the lateness of a 1 ms sleeper on the loop (with the per-scope gauges
refreshed as `janus run` does, and its 1 ms switch interval) while another process asks, back
to back: nothing (the baseline), a static file (the HTTP server's own cost), /status, /metrics
(reused for half a second: about two encodings a second), then both.

    .venv/bin/python -m benchmarks.status_cost [--dependencies 100] [--scopes 100] [--repeat 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable

from prometheus_client import generate_latest

from janus.api.http import serve
from janus.api.metrics import Metrics
from janus.api.status import StatusBoard, picture
from janus.core.policy import DependencyPolicy, FairnessPolicy, RateLimit
from janus.core.scheduler import Scheduler
from janus.service.gc_pauses import RUN_SWITCH_INTERVAL, RUN_THRESHOLDS
from janus.service.observe import Observer

try:  # absent before the kept exposition and picture: the benchmark then runs without them
    from janus.api.exposition import Exposition
    from janus.api.status import KeptPicture
except ImportError:
    Exposition = KeptPicture = None  # type: ignore[assignment,misc]

JOBS_PER_SCOPE = 3
# The client, in a process of its own as Prometheus and a browser are: asks `paths` in turn until
# `seconds` have passed, then prints how many answers it read.
CLIENT = """
import sys, time, urllib.request
base, seconds, every, *paths = sys.argv[1:]
end, answers = time.monotonic() + float(seconds), 0
print("ready", flush=True)
while time.monotonic() < end:
    for path in paths:
        with urllib.request.urlopen(base + path, timeout=10) as response:
            response.read()
        answers += 1
    time.sleep(float(every))
print(answers, flush=True)
"""


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


def traffic(metrics: Metrics, scheduler: Scheduler) -> None:
    """The counters of a leader that has admitted, finished, retried and paused jobs."""
    for dependency in scheduler.policies:
        metrics.admissions.labels(dependency).inc(1000)
        metrics.ready_consumers.labels(dependency).set(4)
        for verdict in ("succeeded", "retry_scheduled", "dead", "released"):
            metrics.transitions.labels(dependency, verdict).inc(10)
        for outcome in ("succeeded", "dead"):
            metrics.outcomes.labels(dependency, outcome).inc(10)
        metrics.gate_events.labels(dependency, "paused").inc()
    metrics.is_leader.set(1)


def timed(
    action: Callable[[], object], repeat: int, before: Callable[[], object] | None = None
) -> list[float]:
    """CPU milliseconds of `repeat` calls (this thread's CPU time: on a shared machine, wall time
    would add whatever other processes took); `before` runs untimed before each."""
    runs = []
    for _ in range(repeat):
        if before is not None:
            before()
        started = time.thread_time()
        action()
        runs.append((time.thread_time() - started) * 1000)
    return runs


async def lag_while(
    base: str, paths: list[str], every: float, seconds: float, server_cpu: Callable[[], float]
) -> tuple[list[float], int, float]:
    """Lateness (ms) of a 1 ms sleeper for `seconds` while a client process asks `paths` in turn,
    then waits `every` seconds; how many answers it read, and the HTTP thread's CPU seconds."""
    loop = asyncio.get_running_loop()
    client = None
    if paths:
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CLIENT,
            base,
            str(seconds),
            str(every),
            *paths,
            stdout=asyncio.subprocess.PIPE,
        )
        assert client.stdout is not None
        await client.stdout.readline()  # ready
    cpu = server_cpu()
    late: list[float] = []
    end = loop.time() + seconds
    while loop.time() < end:
        asked = loop.time()
        await asyncio.sleep(0.001)
        late.append((loop.time() - asked - 0.001) * 1000)
    cpu = server_cpu() - cpu
    answers = 0
    if client is not None:
        out, _ = await client.communicate()
        answers = int(out.split()[-1])
    return late, answers, cpu


def cpu_rows(args: argparse.Namespace, scheduler: Scheduler, observer: Observer, metrics: Metrics) -> None:
    registry = metrics.registry
    ages = iter(range(10**9))

    def scan() -> None:  # every scope's age moves on, as between two scrapes
        observer.scopes(scheduler, 2.0 + next(ages))

    rows: list[tuple[str, list[float]]] = [
        ("tick gauges (loop)", timed(lambda: observer.tick(0, time.perf_counter(), scheduler), args.repeat)),
        ("scope scan (loop, <= 1/s)", timed(scan, args.repeat)),
        ("scrape, library encoder (baseline)", timed(lambda: generate_latest(registry), args.repeat)),
    ]
    if Exposition is not None:
        kept = Exposition(registry)
        rows.append(("scrape /metrics, after a scope scan", timed(kept.render, args.repeat, scan)))
        rows.append(("scrape /metrics, nothing changed", timed(kept.render, args.repeat)))
    rows.append(("refresh /status, built afresh", timed(lambda: json.dumps(picture(registry)), args.repeat)))
    if KeptPicture is not None:
        board = KeptPicture(registry)

        def busy() -> None:  # every scope's age moves on and every lane admits: all lanes change
            scan()
            for dependency in scheduler.policies:
                metrics.admissions.labels(dependency).inc()

        def refresh() -> None:
            board.encoded(time.time(), [])

        rows.append(("refresh /status, every lane changed", timed(refresh, args.repeat, busy)))
        rows.append(("refresh /status, nothing changed", timed(refresh, args.repeat)))
    print(f"{'what (CPU time)':<40} {'median ms':>10} {'max ms':>8}")
    for name, runs in rows:
        print(f"{name:<40} {statistics.median(runs):>10.2f} {max(runs):>8.2f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dependencies", type=int, default=100)
    parser.add_argument("--scopes", type=int, default=100, help="per dependency")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=5.0, help="of each loop-lag measurement")
    args = parser.parse_args()
    gc.set_threshold(*RUN_THRESHOLDS)  # as `janus run` sets them
    sys.setswitchinterval(RUN_SWITCH_INTERVAL)

    started = time.perf_counter()
    scheduler = build(args.dependencies, args.scopes)
    metrics = Metrics()
    observer = Observer(metrics)
    observer.tick(0, time.perf_counter(), scheduler)
    observer.scopes(scheduler, 1.0)
    traffic(metrics, scheduler)
    scrape = generate_latest(metrics.registry)
    series = sum(1 for line in scrape.splitlines() if line and not line.startswith(b"#"))
    print(
        f"{args.dependencies} dependencies x {args.scopes} scopes = {args.dependencies * args.scopes} active "
        f"scopes, {len(scheduler.stats())} lanes; set up in {time.perf_counter() - started:.1f} s"
    )
    print(f"/metrics: {series} series, {len(scrape) / 1024:.0f} KiB")
    cpu_rows(args, scheduler, observer, metrics)

    loop = asyncio.get_running_loop()
    registry = metrics.registry
    port = 19_000 + random.randrange(1000)
    server = serve("127.0.0.1", port, registry, loop, lambda: (True, {}), status=StatusBoard(registry, loop))
    base = f"http://127.0.0.1:{port}"
    clock = time.time
    # The per-scope gauges change as in `janus run` (one dependency at a time, at most once a second).
    scopes = asyncio.create_task(observer.scopes_forever(lambda: scheduler, lambda: clock() - 1e9))
    http_thread = next(t for t in threading.enumerate() if t.name == "janus-http")  # the server's
    assert http_thread.ident is not None
    clock_id = time.pthread_getcpuclockid(http_thread.ident)

    def server_cpu() -> float:
        return time.clock_gettime(clock_id)

    print(
        f"{'loop lag of a 1 ms sleeper, ms':<36} {'max':>7} {'p99':>7} {'mean':>6} "
        f"{'answers':>8} {'HTTP CPU ms/answer':>19}"
    )
    try:
        quiet: float | None = None
        for name, paths, every in (
            ("no client (baseline)", [], 0.0),
            ("a static file, back to back", ["/static/style.css"], 0.0),
            ("/metrics every 0.6 s", ["/metrics"], 0.6),
            ("/status every 0.6 s", ["/status"], 0.6),
            ("/status back to back", ["/status"], 0.0),
            ("/metrics + /status back to back", ["/metrics", "/status"], 0.0),
        ):
            late, answers, cpu = await lag_while(base, paths, every, args.seconds, server_cpu)
            late.sort()
            worst, p99, mean = late[-1], late[int(len(late) * 0.99)], statistics.fmean(late)
            quiet = worst if quiet is None else quiet
            per_answer = f"{cpu * 1000 / answers:>19.2f}" if answers else f"{'-':>19}"
            print(
                f"{name:<36} {worst:>7.2f} {p99:>7.2f} {mean:>6.2f} {answers:>8} {per_answer}"
                + (f"   max - baseline: {worst - quiet:+.1f}" if paths else "")
            )
    finally:
        scopes.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scopes
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
