"""Admission decisions per second of the pure core with a unit limit against a plain count limit
(costed jobs, issue 23), in the same run.

The loop of benchmarks/fairness_core.py (N scopes backlogged throughout; each round admits up
to BATCH, feeds every admission back as a success, submits a new job to the same scope), with
one dependency limited by:
- none: no rate limit (the floor);
- count: one job count limit, "COUNT/1s";
- units: one unit limit, "COUNT units/1s", jobs of random cost 1..1000 whose results report
  an actual cost 0.5..1.5 times the estimate (each result settles its charge);
- both: the count limit and the unit limit together.
The limits are high enough never to bind: the figures are the cost of counting, not of waiting.
Ratios are decisions/s relative to `count` in the same run.

    .venv/bin/python -m benchmarks.units_core [--decisions 100000] [--repeat 3] [--scopes 10 1000]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time

from janus.core.policy import DependencyPolicy, RateCounting, RateLimit
from janus.core.scheduler import Scheduler

DEPENDENCY = "bench"
BATCH = 100
PER_SCOPE = 4
COUNT = RateLimit(count=10_000_000, window=1.0, counts=RateCounting.ADMISSIONS)
UNITS = RateLimit(count=10**12, window=1.0, counts=RateCounting.ADMISSIONS, units=True)
KINDS = {"none": ((), ()), "count": ((COUNT,), ()), "units": ((), (UNITS,)), "both": ((COUNT,), (UNITS,))}


class Bench:
    def __init__(self, kind: str, scopes: int) -> None:
        rates, units = KINDS[kind]
        policy = DependencyPolicy(
            name=DEPENDENCY, rate_limits=rates, unit_limits=units, lease_timeout=60.0, admission_ttl=30.0
        )
        self.scheduler = Scheduler([policy], random.Random(7))
        self.costed = bool(units)
        self.rng = random.Random(11)
        self.now, self.serial = 1.0, 0
        for _ in range(max(PER_SCOPE, -(-2 * BATCH // scopes))):
            for index in range(scopes):
                self._submit(f"s{index}")
        self.scheduler.drain_changes()

    def _submit(self, scope: str) -> None:
        self.serial += 1
        cost = float(self.rng.randint(1, 1000)) if self.costed else 1.0
        self.scheduler.submit(
            job_id=f"j{self.serial}",
            dependency=DEPENDENCY,
            scope=scope,
            payload=None,
            now=self.now,
            cost=cost,
        )

    def run(self, decisions: int) -> float:
        """Seconds of whole rounds (admit + results + submissions + drain) for `decisions` admissions."""
        scheduler, rng, costed = self.scheduler, self.rng, self.costed
        done = 0
        started = time.perf_counter()
        while done < decisions:
            self.now += 0.001
            decision = scheduler.admit(self.now, limit=BATCH)
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
                    cost=admission.cost * rng.uniform(0.5, 1.5) if costed else None,
                )
                self._submit(admission.scope)
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
        print(f"{scopes:,} scopes, {args.decisions:,} decisions, best and median of {args.repeat}:")
        # Interleaved repeats: a noisy neighbour on a shared machine hits every kind alike.
        seconds: dict[str, list[float]] = {kind: [] for kind in KINDS}
        benches = {kind: Bench(kind, scopes) for kind in KINDS}
        for _ in range(args.repeat):
            for kind, bench in benches.items():
                gc.collect()
                seconds[kind].append(bench.run(args.decisions))
        baseline = args.decisions / min(seconds["count"])
        for kind, runs in seconds.items():
            best, median = args.decisions / min(runs), args.decisions / statistics.median(runs)
            print(
                f"  {kind:<6} best {best:>9,.0f}/s  median {median:>9,.0f}/s  x{best / baseline:4.2f} of count"
            )


if __name__ == "__main__":
    main()
