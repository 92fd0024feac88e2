"""Simulated jobs per second of wall time of `janus simulate`, by the shape of the workload.

No I/O: `janus.simulate.simulate` (the production Scheduler on a virtual clock) run in this
process on three workloads, each --repeat times; the figure is the best run (and the median).
What a job costs the simulation depends mostly on how many admission steps (ticks) it takes:
the core's `admit()` is called once per instant at which something reaches Janus, so jobs that
share instants share the cost.

- burst: tenants publish their backlogs at once; a rate limit admits them in whole windows, and
  calls of a fixed duration end together. Few ticks per job.
- steady: an hour of Poisson arrivals with a rate and a concurrency limit, lognormal call times
  and a few failures (retries): realistic traffic, about one tick per job.
- continuous: a concurrency-bound backlog with uniformly spread call times: every result is an
  instant of its own, and frees a slot, so each job costs an admission step for its result and
  one when its (stale) lease deadline comes up, as in the service. The slowest shape.

    .venv/bin/python -m benchmarks.simulate_speed [--repeat 3] [--scale 1.0] [--baseline-tree DIR | --compiled] [--split]

With --split, one run of each shape with the core's methods timed: where the time of a job
goes, the core (`Scheduler.admit`, `submit`, `on_result`, ...) or the engine around it. With
--baseline-tree (a source tree holding an older `janus/`, e.g. `git archive` of main), each
run is a child process, and the two trees alternate run by run on the same workloads: the
comparison is made in one run, under the same load. With --compiled, the same between this
tree and a copy of it built with `make compiled` (scripts/compile_core.py: the core and the
engine compiled by mypyc, a C compiler needed).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from janus.core.policy import DependencyPolicy, FairnessPolicy, RateLimit, RetryPolicy
from janus.simulate import parse_workload, simulate


def shapes(scale: float) -> dict[str, tuple[list[DependencyPolicy], Mapping[str, Any]]]:
    def n(count: int) -> int:
        return max(1, round(count * scale))

    burst = (
        [
            DependencyPolicy(
                name="api",
                rate_limits=(RateLimit(count=2000, window=1.0),),
                admission_ttl=0.1,
                lease_timeout=30.0,
                fairness=FairnessPolicy(weights={"t0": 3.0}),
            )
        ],
        {
            "arrivals": [{"dependency": "api", "scope": f"t{i}", "count": n(20_000)} for i in range(10)],
            "services": {"api": {"duration": "200ms"}},
            "workers": {"api": {"start_delay": "5ms"}},
        },
    )
    steady = (
        [
            DependencyPolicy(
                name="api",
                rate_limits=(RateLimit(count=100, window=1.0), RateLimit(count=5000, window=60.0)),
                concurrency=40,
                admission_ttl=0.1,
                lease_timeout=30.0,
                retry=RetryPolicy(max_attempts=4),
            )
        ],
        {
            "arrivals": [
                {
                    "dependency": "api",
                    "scope": f"t{i}",
                    "rate": 8,
                    "stop": f"{n(3600)}s",
                    "spacing": "poisson",
                }
                for i in range(10)
            ],
            "services": {
                "api": {"duration": {"lognormal": "150ms", "sigma": 0.6}, "failure_probability": 0.02}
            },
            "workers": {"api": {"slots": 60, "start_delay": "5ms"}},
        },
    )
    continuous = (
        [DependencyPolicy(name="api", concurrency=50, admission_ttl=1.0, lease_timeout=30.0)],
        {
            "arrivals": [{"dependency": "api", "scope": f"t{i}", "count": n(10_000)} for i in range(10)],
            "services": {"api": {"duration": {"uniform": ["50ms", "150ms"]}}},
        },
    )
    return {"burst": burst, "steady": steady, "continuous": continuous}


def run(policies: list[DependencyPolicy], data: Mapping[str, Any]) -> tuple[int, int, float, float, float]:
    """(jobs, ticks, wall seconds, CPU seconds, simulated seconds) of one run."""
    workload = parse_workload(data, [policy.name for policy in policies])
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    outcome = simulate(policies, workload, seed=1)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert outcome.unfinished == 0
    return outcome.jobs, outcome.ticks, elapsed, cpu, outcome.end


def run_in(tree: Path, shape: str, scale: float) -> tuple[int, int, float, float, float]:
    """`run` of one shape in a child process whose `janus` is the one of `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(Path(__file__).resolve()), "--one", shape, "--scale", str(scale)]
    done = subprocess.run(command, env=env, cwd=tree, check=True, capture_output=True, text=True)
    jobs, ticks, wall, cpu, simulated = json.loads(done.stdout.strip().splitlines()[-1])
    return int(jobs), int(ticks), float(wall), float(cpu), float(simulated)


THIS_TREE = Path(__file__).resolve().parent.parent


def compare(baseline: Path, repeat: int, scale: float) -> None:
    """The baseline tree and this one, alternated run by run, each in a child process."""
    compare_trees({"baseline": baseline.resolve(), "this tree": THIS_TREE}, repeat, scale)


def compiled_against_python(repeat: int, scale: float) -> None:
    """This tree as Python against a copy of it built with `make compiled` (scripts/compile_core.py)."""
    with tempfile.TemporaryDirectory(prefix="janus-compiled-") as scratch:
        copy = Path(scratch)
        for part in ("janus", "benchmarks", "scripts"):
            shutil.copytree(
                THIS_TREE / part, copy / part, ignore=shutil.ignore_patterns("__pycache__", "*.so")
            )
        shutil.copy(THIS_TREE / "pyproject.toml", copy)
        subprocess.run([sys.executable, "scripts/compile_core.py"], cwd=copy, check=True, capture_output=True)
        compare_trees({"python": THIS_TREE, "compiled": copy}, repeat, scale)


def compare_trees(trees: dict[str, Path], repeat: int, scale: float) -> None:
    """Each tree's janus, alternated run by run on the same workloads, each run a child process."""
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"{'workload':<12}{'tree':<11}{'jobs':>9}{'ticks/job':>11}  jobs per CPU second, then jobs/s (wall), per run"
    )
    for shape in shapes(scale):
        runs: dict[str, list[tuple[int, int, float, float, float]]] = {name: [] for name in trees}
        for _ in range(repeat):
            for name, tree in trees.items():
                runs[name].append(run_in(tree, shape, scale))
        for name, measured in runs.items():
            jobs, ticks = measured[0][0], measured[0][1]
            cpu = " ".join(f"{jobs / r[3]:>8,.0f}" for r in measured)
            wall = " ".join(f"{jobs / r[2]:>8,.0f}" for r in measured)
            print(f"{shape:<12}{name:<11}{jobs:>9,}{ticks / jobs:>11.2f}  {cpu}  | {wall}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


# The Scheduler's methods the engine calls, timed by --split.
_CORE_CALLS = (
    "submit",
    "admit",
    "on_result",
    "on_returned",
    "expire_leases",
    "page_requests",
    "load_page",
    "drain_changes",
    "drain_gates",
    "job",
    "scopes_at_caps",
)


def split(scale: float) -> None:
    """Each shape once, the core's calls timed: µs per job in each, and in the engine (the rest
    of the run's wall time: on an idle machine, its CPU time). The timing wrapper's own cost,
    measured around an empty function, is taken off each call and off the run's time."""
    from janus.core.scheduler import Scheduler

    spent: dict[str, int] = dict.fromkeys(_CORE_CALLS, 0)
    calls: dict[str, int] = dict.fromkeys(_CORE_CALLS, 0)
    clock = time.perf_counter_ns  # a CPU clock costs a system call: more than most calls timed

    def timed(name: str, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            result = method(*args, **kwargs)
            spent[name] += clock() - started
            calls[name] += 1
            return result

        return call

    def empty() -> None:
        return None

    probe = timed("job", empty)
    for _ in range(200_000):
        probe()
    overhead = spent["job"] / calls["job"]  # ns a wrapped call costs beyond the call itself
    spent["job"] = calls["job"] = 0
    originals = {name: getattr(Scheduler, name) for name in _CORE_CALLS}
    for name, method in originals.items():
        setattr(Scheduler, name, timed(name, method))
    try:
        print(f"timing wrapper: {overhead:.0f} ns per call, taken off")
        for shape, (policies, data) in shapes(scale).items():
            spent.update(dict.fromkeys(_CORE_CALLS, 0))
            calls.update(dict.fromkeys(_CORE_CALLS, 0))
            jobs, ticks, wall, _, _ = run(policies, data)
            core = {name: max(0.0, spent[name] - overhead * calls[name]) / 1e3 for name in _CORE_CALLS}
            # Besides its own cost, each wrapped call costs the run about 2 x overhead (the
            # wrapper around it, and the clock read inside it that the core share holds).
            engine = wall * 1e6 - sum(core.values()) - 2 * overhead / 1e3 * sum(calls.values())
            parts = ", ".join(
                f"{name} {core[name] / jobs:.2f} ({calls[name] / jobs:.2f}/job)"
                for name in sorted(core, key=core.__getitem__, reverse=True)
                if core[name] / jobs >= 0.05
            )
            print(
                f"{shape:<12}{jobs:>9,} jobs {ticks / jobs:5.2f} ticks/job: µs per job: "
                f"core {sum(core.values()) / jobs:.2f}, engine {engine / jobs:.2f}; core by call: {parts}",
                flush=True,
            )
    finally:
        for name, method in originals.items():
            setattr(Scheduler, name, method)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every workload's size")
    parser.add_argument("--baseline-tree", type=Path, help="also this source tree's janus, alternated")
    parser.add_argument("--split", action="store_true", help="time the core's calls: core vs engine")
    parser.add_argument(
        "--compiled", action="store_true", help="this tree against a copy built with `make compiled` (mypyc)"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child's single run of that shape
    args = parser.parse_args()
    if args.split:
        split(args.scale)
        return
    if args.one is not None:
        policies, data = shapes(args.scale)[args.one]
        print(json.dumps(run(policies, data)))
        return
    if args.compiled:
        compiled_against_python(args.repeat, args.scale)
        return
    if args.baseline_tree is not None:
        compare(args.baseline_tree, args.repeat, args.scale)
        return
    # Jobs per CPU second beside jobs per wall second: on a shared machine the process gets
    # only part of a core, and the wall figure then says more about the neighbours.
    print(
        f"{'workload':<12}{'jobs':>9}{'ticks/job':>11}{'simulated':>11}{'best jobs/s':>13}{'median':>10}"
        f"{'best jobs/CPU-s':>17}"
    )
    for name, (policies, data) in shapes(args.scale).items():
        runs = [run(policies, data) for _ in range(args.repeat)]
        jobs, ticks, _, _, simulated = runs[0]
        rates = [jobs / elapsed for _, _, elapsed, _, _ in runs]
        cpu_rates = [jobs / cpu for _, _, _, cpu, _ in runs]
        print(
            f"{name:<12}{jobs:>9,}{ticks / jobs:>11.2f}{simulated:>10.0f}s"
            f"{max(rates):>13,.0f}{statistics.median(rates):>10,.0f}{max(cpu_rates):>17,.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
