"""Intake-to-worker latency at a steady pace: Janus against a bare relay, in one run.

For each --rates pace (jobs/s), a paced producer publishes one job at a time, and the worker
(benchmarks.load, fast: no handler time) reports each job's delay from publish to receipt.
The same producer and worker run behind a bare relay (benchmarks.relay: no database, no
limits) and behind a real `janus run` (one unlimited dependency, a fresh database), in
alternating phases of --seconds each, --repeat times, so that the machine's load moves both
alike. Printed: each phase's p50, p99 and max, the medians per variant and the ratio
Janus/relay (under 1.0: Janus adds no delay of its own beyond the relay's).

    .venv/bin/python -m benchmarks.latency [--rates 200,600] [--seconds 10] [--repeat 3]

Absolute figures move with the machine's load: read the ratios of the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

import uvloop

from benchmarks.throughput import (
    JANUS_CONFIG,
    Child,
    JanusCoordinator,
    Latency,
    Services,
    janus_env,
    measure_latency,
    relay_running,
)
from janus.local_services import LocalServices


def describe(latency: Latency) -> str:
    return (
        f"{latency.variant:<6} {latency.jobs:>6} jobs at {latency.achieved_rate:6.0f}/s: "
        f"p50 {latency.p50 * 1000:6.2f} ms  p99 {latency.p99 * 1000:6.2f} ms  max {latency.max * 1000:7.1f} ms"
    )


async def paced(services: Services, rate: float, seconds: float, repeat: int) -> list[Latency]:
    """Alternating relay and Janus phases at `rate`: one Janus for all its phases (its count of
    results goes on), a fresh relay per phase (it checks its own count when it stops)."""
    jobs = max(int(rate * seconds), 50)
    phases: list[Latency] = []
    with tempfile.TemporaryDirectory(prefix="janus-latency-") as tmp:
        workdir = Path(tmp)
        async with (
            services.scratch("janus_bench_latency") as janus_side,
            services.scratch("janus_bench_latency_relay") as relay_side,
        ):
            config = workdir / "janus.toml"
            config.write_text(JANUS_CONFIG, encoding="utf-8")
            env = janus_env(janus_side.amqp_url, janus_side.database_url)
            janus = await Child.start(
                "janus", ["-m", "janus.cli", "run", "--config", str(config)], workdir, env
            )
            try:
                await janus.wait_for_stderr("leading as", timeout=60.0)
                coordinator = JanusCoordinator(janus, janus_side.database_url, janus_side.name)
                done = 0
                for round_ in range(repeat):
                    async with relay_running(f"relay-{round_}", relay_side.amqp_url, jobs, workdir) as relay:
                        phases.append(
                            await measure_latency("relay", relay, relay_side.amqp_url, rate, jobs, workdir)
                        )
                    print(describe(phases[-1]), flush=True)
                    phases.append(
                        await measure_latency(
                            "janus",
                            coordinator,
                            janus_side.amqp_url,
                            rate,
                            jobs,
                            workdir,
                            results_before=done,
                            prefix=f"janus-lat-{round_}",
                        )
                    )
                    done += jobs
                    print(describe(phases[-1]), flush=True)
                await janus.stop()
            finally:
                await Child.kill_all()
    return phases


def summary(rate: float, phases: Sequence[Latency]) -> str:
    def median(variant: str, field: str) -> float:
        return float(statistics.median(getattr(p, field) for p in phases if p.variant == variant))

    lines = [f"at {rate:.0f} jobs/s, medians over {len(phases) // 2} phases each:"]
    for field in ("p50", "p99"):
        relay, janus = median("relay", field), median("janus", field)
        lines.append(
            f"  {field}: relay {relay * 1000:.2f} ms, janus {janus * 1000:.2f} ms, ratio janus/relay {janus / relay:.2f}"
        )
    return "\n".join(lines)


async def run(rates: Sequence[float], seconds: float, repeat: int) -> None:
    services = LocalServices()
    summaries = []
    for rate in rates:
        print(f"-- {rate:.0f} jobs/s", flush=True)
        summaries.append(summary(rate, await paced(services, rate, seconds, repeat)))
    print("\n".join(summaries))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates", default="200,600", help="paces in jobs/s, comma-separated (default 200,600)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="phases per variant and pace (default 3)")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    uvloop.run(run(rates, args.seconds, args.repeat))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
