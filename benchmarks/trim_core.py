"""What trimming costs the core: decisions per second with results that carry the call's
`duration` (each trims its admission's place in every rate window) against results without it,
in the same run, alternating.

The loop of benchmarks/units_core.py (N scopes backlogged throughout; each round admits up to
BATCH, feeds every admission back as a success, submits a new job to the same scope), one
dependency with a job count limit and a unit limit that count starts (the limits that trim), high
enough never to bind: the figures are the cost of counting and trimming, not of waiting.

    .venv/bin/python -m benchmarks.trim_core [--decisions 100000] [--repeat 3] [--scopes 10 1000]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time

from janus.core.policy import DependencyPolicy, RateLimit
from janus.core.scheduler import Scheduler

DEPENDENCY = "bench"
BATCH = 100
PER_SCOPE = 4
COUNT = RateLimit(count=10_000_000, window=1.0)
UNITS = RateLimit(count=10**12, window=1.0, units=True)


def run(scopes: int, decisions: int, trim: bool) -> float:
    """Seconds of whole rounds (admit + results + submissions + drain) for `decisions` admissions."""
    policy = DependencyPolicy(
        name=DEPENDENCY, rate_limits=(COUNT,), unit_limits=(UNITS,), lease_timeout=60.0, admission_ttl=0.25
    )
    scheduler = Scheduler([policy], random.Random(7))
    rng = random.Random(11)
    now, serial = 1.0, 0

    def submit(scope: str) -> None:
        nonlocal serial
        serial += 1
        scheduler.submit(
            job_id=f"j{serial}",
            dependency=DEPENDENCY,
            scope=scope,
            payload=None,
            now=now,
            cost=rng.randint(1, 1000),
        )

    for _ in range(max(PER_SCOPE, -(-2 * BATCH // scopes))):
        for index in range(scopes):
            submit(f"s{index}")
    scheduler.drain_changes()
    done = 0
    started = time.perf_counter()
    while done < decisions:
        now += 0.001
        decision = scheduler.admit(now, limit=BATCH)
        for admission in decision.admissions:
            scheduler.on_result(
                job_id=admission.job_id,
                attempt=admission.attempt,
                success=True,
                error=None,
                retry_after=None,
                now=now,
                duration=0.0 if trim else None,
                cost=admission.cost,
            )
            submit(admission.scope)
        scheduler.drain_changes()
        done += len(decision.admissions)
    return (time.perf_counter() - started) / done * decisions


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scopes", type=int, nargs="*", default=[10, 1000])
    args = parser.parse_args()
    for scopes in args.scopes:
        rates: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeat):
            for trim in (False, True):  # alternating, so that the machine's load hits both alike
                gc.collect()
                rates[trim].append(args.decisions / run(scopes, args.decisions, trim))
        best = {trim: max(values) for trim, values in rates.items()}
        print(
            f"scopes {scopes}: without duration {best[False]:,.0f}/s (median "
            f"{statistics.median(rates[False]):,.0f}), with duration {best[True]:,.0f}/s (median "
            f"{statistics.median(rates[True]):,.0f}); trimmed / untrimmed (best) {best[True] / best[False]:.2f}"
        )


if __name__ == "__main__":
    main()
