"""Admission decisions per second of the pure core (janus.core.scheduler), by number of scopes.

No I/O: one `Scheduler` with one dependency (no rate limit, no concurrency limit),
N scopes each backlogged throughout. One round is `admit(now, limit=BATCH)`; every
admission is then fed back as a success (`on_result`), which frees its slot, and a
new job is submitted to the same scope so that every scope stays backlogged; then
`drain_changes()`, as the service does once per tick. Setup (submitting the initial
backlog) is excluded.

Two figures per scope count, each the best and the median of --repeat runs of
--decisions decisions:
- admit: time spent inside `admit()` only, per admission (the decision itself);
- cycle: the whole round (admit + on_result + submit + drain_changes) per admission,
  i.e. what one admitted job costs the core from arrival to result.
Baselines measured in the same run: the same loop with 1 scope, and a bare
`collections.deque` FIFO pop loop (the floor of any queue in Python). Ratios are
decisions/s relative to the 1-scope core.

    .venv/bin/python -m benchmarks.fairness_core [--decisions 200000] [--repeat 3] [--profile 10000]

--profile N runs cProfile over one admit-only measurement at N scopes and prints the
top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import random
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence

from janus.core.policy import DependencyPolicy
from janus.core.scheduler import Scheduler

DEPENDENCY = "bench"
SCOPES = (10, 1_000, 10_000, 100_000)
BATCH = 100  # admissions per admit() call, about what a busy tick admits
PER_SCOPE = 4  # jobs each scope holds at least (kept constant by resubmitting)


class Bench:
    """A scheduler with `scopes` backlogged scopes, ready to run rounds."""

    def __init__(self, scopes: int) -> None:
        self.scheduler = Scheduler(
            [DependencyPolicy(name=DEPENDENCY, lease_timeout=60.0, admission_ttl=30.0)], random.Random(7)
        )
        self.now = 1.0
        self.serial = 0
        # Enough jobs that every admit() call can fill its batch, whatever the scope count.
        for _ in range(max(PER_SCOPE, -(-2 * BATCH // scopes))):
            for index in range(scopes):
                self._submit(f"s{index}")
        self.scheduler.drain_changes()
        if self.scheduler.page_requests():
            raise SystemExit(f"{scopes} scopes x {PER_SCOPE} jobs do not fit in memory: pick fewer jobs")

    def _submit(self, scope: str) -> None:
        self.serial += 1
        self.scheduler.submit(
            job_id=f"j{self.serial}", dependency=DEPENDENCY, scope=scope, payload=None, now=self.now
        )

    def run(self, decisions: int) -> tuple[float, float]:
        """Admit `decisions` jobs; returns (seconds inside admit, seconds of whole rounds)."""
        scheduler = self.scheduler
        clock = time.perf_counter
        inside = 0.0
        done = 0
        started = clock()
        while done < decisions:
            self.now += 0.001
            before = clock()
            decision = scheduler.admit(self.now, limit=BATCH)
            inside += clock() - before
            if not decision.admissions:
                raise SystemExit(f"nothing admitted: {decision.blocked}")
            for admission in decision.admissions:
                scheduler.on_result(
                    job_id=admission.job_id,
                    attempt=admission.attempt,
                    success=True,
                    error=None,
                    retry_after=None,
                    now=self.now,
                )
                self._submit(admission.scope)
            scheduler.drain_changes()
            done += len(decision.admissions)
        return inside / done * decisions, (clock() - started) / done * decisions


def deque_floor(decisions: int) -> float:
    """Seconds for `decisions` FIFO pops (and pushes back, so the queue stays full)."""
    queue = deque(range(1000))
    started = time.perf_counter()
    for _ in range(decisions):
        queue.append(queue.popleft())
    return time.perf_counter() - started


def measure(run: Callable[[], tuple[float, float]], repeat: int) -> tuple[list[float], list[float]]:
    admits, cycles = [], []
    for _ in range(repeat):
        gc.collect()
        admit, cycle = run()
        admits.append(admit)
        cycles.append(cycle)
    return admits, cycles


def line(label: str, seconds: Sequence[float], decisions: int, baseline: float | None) -> str:
    best, median = min(seconds), statistics.median(seconds)
    rate = decisions / best
    ratio = f"  x{rate / baseline:5.2f} of 1 scope" if baseline else ""
    return (
        f"  {label:<16} best {rate:>10,.0f}/s ({best / decisions * 1e6:6.2f} µs)"
        f"  median {decisions / median:>10,.0f}/s ({median / decisions * 1e6:6.2f} µs){ratio}"
    )


def profile(scopes: int, decisions: int, top: int = 25) -> None:
    bench = Bench(scopes)
    bench.run(decisions // 4)  # warm up
    profiler = cProfile.Profile()
    profiler.enable()
    bench.run(decisions)
    profiler.disable()
    print(f"\ncProfile of the whole round at {scopes:,} scopes ({decisions:,} decisions), by own time:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decisions", type=int, default=200_000, help="decisions per measurement")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scopes", type=int, nargs="*", default=list(SCOPES))
    parser.add_argument("--profile", type=int, default=0, help="profile at this many scopes instead")
    args = parser.parse_args()
    decisions, repeat = args.decisions, args.repeat
    if args.profile:
        profile(args.profile, decisions)
        return
    print(f"{decisions:,} decisions per measurement, best and median of {repeat}; batch {BATCH} per admit()")
    floor = [deque_floor(decisions) for _ in range(repeat)]
    print(line("deque pop/push", floor, decisions, None))
    one = Bench(1)
    admits, cycles = measure(lambda: one.run(decisions), repeat)
    base_admit, base_cycle = decisions / min(admits), decisions / min(cycles)
    print("1 scope (baseline):")
    print(line("admit", admits, decisions, base_admit))
    print(line("cycle", cycles, decisions, base_cycle))
    for scopes in args.scopes:
        setup = time.perf_counter()
        bench = Bench(scopes)
        setup = time.perf_counter() - setup
        admits, cycles = measure(lambda bench=bench: bench.run(decisions), repeat)  # type: ignore[misc]
        print(f"{scopes:,} scopes (setup {setup:.1f}s, excluded):")
        print(line("admit", admits, decisions, base_admit))
        print(line("cycle", cycles, decisions, base_cycle))
        del bench
    print(
        f"deque floor vs 1-scope admit: the core's decision costs x{decisions / min(floor) / base_admit:.0f} a pop"
    )


if __name__ == "__main__":
    main()
