"""Intake-to-worker latency at a steady pace: Janus against a bare and a durable relay, in one run.

For each --rates pace (jobs/s), a paced producer publishes one job at a time, and the worker
(benchmarks.load, fast: no handler time) reports each job's delay from publish to receipt.
The same producer and worker run behind a bare relay (benchmarks.relay: no database, no
limits), behind a durable relay (benchmarks.relay --database-url: the same relay, which also
commits each batch of intake to PostgreSQL before publishing it, and each batch of results
before acking them, on a fresh database: the floor of any coordinator that commits before it
publishes) and behind a real `janus run` (one unlimited dependency, a fresh database), in
alternating phases of --seconds each, --repeat times, so that the machine's load moves them all
alike. Printed: each phase's p50, p99 and max, the medians per variant and the ratios
Janus/relay (under 1.0: Janus adds no delay of its own beyond the relay's) and Janus/durable
relay (under 1.0: none beyond the commit its guarantee requires). Each round starts
with a commit probe: a tiny INSERT committed alone, timed, the floor under every tick's commit.

    .venv/bin/python -m benchmarks.latency [--rates 200,600] [--seconds 10] [--repeat 3] [--baseline-tree DIR]

With --baseline-tree (a source tree holding another `janus/`, e.g. `git archive` of main), a
second Janus runs from it, on a vhost and a database of its own, its phases alternated with the
relays' and this tree's.

Absolute figures move with the machine's load: read the ratios of the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import uvloop

from benchmarks._processes import ROOT
from benchmarks.throughput import (
    JANUS_CONFIG,
    Child,
    JanusCoordinator,
    Latency,
    RelayCoordinator,
    Services,
    janus_env,
    measure_latency,
    relay_running,
)
from janus.local_services import LocalServices, Scratch

RELAY = "relay"
DURABLE_RELAY = "durable relay"


def describe(latency: Latency) -> str:
    database = latency.database_cpu_per_job
    return (
        f"{latency.variant:<14} {latency.jobs:>6} jobs at {latency.achieved_rate:6.0f}/s: "
        f"p50 {latency.p50 * 1000:6.2f} ms  p99 {latency.p99 * 1000:6.2f} ms  max {latency.max * 1000:7.1f} ms"
        f"  CPU {latency.cpu_per_job * 1e6:4.0f} us/job"
        + ("" if database is None else f" (PostgreSQL {database * 1e6:4.0f} us/job)")
    )


@dataclass(frozen=True, slots=True)
class JanusSide:
    """One Janus of the run: its name in the output and the source tree it runs from."""

    variant: str
    tree: Path


async def commit_probe(database_url: str, count: int = 5) -> list[float]:
    """Round trips of a tiny INSERT committed on its own (no SELECT): the floor a tick's
    commit sits on at this moment (the disk's fsync, the server's load)."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (at double precision)")
        timings = []
        for _ in range(count):
            began = time.perf_counter()
            await connection.execute("INSERT INTO bench_commit_probe VALUES (1)")  # autocommit
            timings.append(time.perf_counter() - began)
        return timings
    finally:
        await connection.close()


def durable_relay(
    scratch: Scratch, round_: int, jobs: int, workdir: Path
) -> contextlib.AbstractAsyncContextManager[RelayCoordinator]:
    """A durable relay for one phase, writing to the scratch database (its rows kept)."""
    database = (scratch.database_url, scratch.name)
    return relay_running(f"durable-relay-{round_}", scratch.amqp_url, jobs, workdir, database)


async def paced(
    services: Services, rate: float, seconds: float, repeat: int, sides: Sequence[JanusSide]
) -> list[Latency]:
    """Alternating relay, durable relay and Janus phases at `rate`: one process per Janus for
    all its phases (its count of results goes on), a fresh relay per phase (it checks its own
    count when it stops; the durable relay's table keeps its rows from phase to phase). Each
    Janus and each relay has a vhost (and a database) of its own."""
    jobs = max(int(rate * seconds), 50)
    phases: list[Latency] = []
    with tempfile.TemporaryDirectory(prefix="janus-latency-") as tmp:
        workdir = Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            relay_side = await stack.enter_async_context(services.scratch("janus_bench_latency_relay"))
            durable_side = await stack.enter_async_context(services.scratch("janus_bench_latency_durable"))
            scratches = [
                await stack.enter_async_context(services.scratch("janus_bench_latency")) for _ in sides
            ]
            config = workdir / "janus.toml"
            config.write_text(JANUS_CONFIG, encoding="utf-8")
            try:
                coordinators = []
                for side, scratch in zip(sides, scratches, strict=True):
                    env = janus_env(scratch.amqp_url, scratch.database_url)
                    janus = await Child.start(
                        side.variant,
                        ["-m", "janus.cli", "run", "--config", str(config)],
                        workdir,
                        env,
                        tree=side.tree,
                    )
                    await janus.wait_for_stderr("leading as", timeout=60.0)
                    coordinators.append((janus, JanusCoordinator(janus, scratch.database_url, scratch.name)))
                done = 0
                for round_ in range(repeat):
                    probe = sorted(await commit_probe(scratches[0].database_url))
                    print(
                        f"commit probe: median {statistics.median(probe) * 1e6:.0f} us, "
                        f"max {probe[-1] * 1e6:.0f} us",
                        flush=True,
                    )
                    async with relay_running(f"relay-{round_}", relay_side.amqp_url, jobs, workdir) as relay:
                        phases.append(
                            await measure_latency(RELAY, relay, relay_side.amqp_url, rate, jobs, workdir)
                        )
                    print(describe(phases[-1]), flush=True)
                    async with durable_relay(durable_side, round_, jobs, workdir) as relay:
                        phases.append(
                            await measure_latency(
                                DURABLE_RELAY,
                                relay,
                                durable_side.amqp_url,
                                rate,
                                jobs,
                                workdir,
                                results_before=done,
                                prefix=f"durable-lat-{round_}",
                            )
                        )
                    print(describe(phases[-1]), flush=True)
                    for side, scratch, (_, coordinator) in zip(sides, scratches, coordinators, strict=True):
                        phases.append(
                            await measure_latency(
                                side.variant,
                                coordinator,
                                scratch.amqp_url,
                                rate,
                                jobs,
                                workdir,
                                results_before=done,
                                prefix=f"{side.variant}-lat-{round_}",
                            )
                        )
                        print(describe(phases[-1]), flush=True)
                    done += jobs
                for janus, _ in coordinators:
                    await janus.stop()
            finally:
                await Child.kill_all()
    return phases


def summary(rate: float, phases: Sequence[Latency]) -> str:
    def median(variant: str, field: str) -> float:
        return float(statistics.median(getattr(p, field) for p in phases if p.variant == variant))

    def ratios(variant: str, field: str) -> str:
        """The variant's median over each relay's that is not itself."""
        figure = median(variant, field)
        floors = [floor for floor in floors_present if floor != variant]
        return "; ".join(f"ratio to {floor} {figure / median(floor, field):.2f}" for floor in floors)

    floors_present = [floor for floor in (RELAY, DURABLE_RELAY) if any(p.variant == floor for p in phases)]
    variants = list(dict.fromkeys(p.variant for p in phases if p.variant != RELAY))
    rounds = sum(1 for p in phases if p.variant == RELAY)
    lines = [f"at {rate:.0f} jobs/s, medians over {rounds} phases each:"]
    for field in ("p50", "p99"):
        figures = [f"relay {median(RELAY, field) * 1000:.2f} ms"]
        for variant in variants:
            figures.append(f"{variant} {median(variant, field) * 1000:.2f} ms ({ratios(variant, field)})")
        lines.append(f"  {field}: " + ", ".join(figures))
    # At a pace, ticks are small: the per-tick costs (the statement, the gauges) show here, not
    # in the throughput run, where a tick carries hundreds of jobs.
    figures = [f"relay {median(RELAY, 'cpu_per_job') * 1e6:.0f} us"]
    for variant in variants:
        cpu = median(variant, "cpu_per_job")
        database = median(variant, "database_cpu_per_job")
        figures.append(
            f"{variant} {cpu * 1e6:.0f} us ({ratios(variant, 'cpu_per_job')}; PostgreSQL {database * 1e6:.0f} us)"
        )
    lines.append("  CPU per job: " + ", ".join(figures))
    # The PostgreSQL backends' CPU of each variant that writes, against the durable relay's.
    if DURABLE_RELAY in floors_present:
        floor = median(DURABLE_RELAY, "database_cpu_per_job")
        figures = [
            f"{variant} {median(variant, 'database_cpu_per_job') / floor:.2f}"
            for variant in variants
            if variant != DURABLE_RELAY
        ]
        lines.append("  PostgreSQL CPU per job, ratio to durable relay: " + ", ".join(figures))
    return "\n".join(lines)


async def run(rates: Sequence[float], seconds: float, repeat: int, baseline: Path | None) -> None:
    services = LocalServices()
    sides = [JanusSide("janus", ROOT)]
    if baseline is not None:
        sides.append(JanusSide("janus-baseline", baseline))
    summaries = []
    for rate in rates:
        print(f"-- {rate:.0f} jobs/s", flush=True)
        summaries.append(summary(rate, await paced(services, rate, seconds, repeat, sides)))
    print("\n".join(summaries))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates", default="200,600", help="paces in jobs/s, comma-separated (default 200,600)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="phases per variant and pace (default 3)")
    parser.add_argument(
        "--baseline-tree", type=Path, help="also Janus run from this source tree (e.g. main, exported)"
    )
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    baseline = args.baseline_tree.resolve() if args.baseline_tree is not None else None
    uvloop.run(run(rates, args.seconds, args.repeat, baseline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
