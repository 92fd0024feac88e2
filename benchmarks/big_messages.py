"""The leader's memory under a flood of big messages, against a baseline tree in the same run.

What issue 20 measured: results and intake messages of 8 MB, each over its cap, published
as fast as the broker takes them to a leader on a broker whose `max_message_size` is
RabbitMQ's default (128 MiB: the shared local broker, which the benchmark must not
reconfigure). The leader must set every one aside; the question is what that costs its
memory. For each tree (this one, and --baseline, e.g. a checkout of the code before the
bound): a fresh database and vhost, `janus run` (one dependency, `bench`) from that tree,
its RSS sampled (psutil) every 100 ms; phase 1 publishes --results results, phase 2
--intake intake messages, of --size bytes each; a phase ends when janus.rejected holds them
all. Reported per tree: RSS before, the peak of each phase, and after both, and what
janus.rejected holds (bytes, read back); and this tree's peaks as a ratio of the baseline's.

    .venv/bin/python -m benchmarks.big_messages [--baseline /path/to/old/checkout]
        [--results 40] [--intake 60] [--size 8000000]

What it does not show: with the broker's `max_message_size` set to Janus's (as
deploy/rabbitmq/rabbitmq.conf does), such messages are refused at the publish and never
reach the leader at all; the bound then is the prefetch (32 MiB a queue).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aio_pika

from benchmarks.backlog_memory import MB, BenchmarkError, Leader, Sampler, environment
from benchmarks.throughput import janus_env
from janus.broker import topology
from janus.local_services import LocalServices

ROOT = Path(__file__).resolve().parents[1]
DEPENDENCY = "bench"
CONFIG = f"""\
# Written by benchmarks/big_messages.py.
[dependencies.{DEPENDENCY}]
lease_timeout = "60s"
"""
PHASE_TIMEOUT = 300.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Figures:
    tree: str
    rss_before: int
    rss_peak_results: int
    rss_peak_intake: int
    rss_after: int
    rejected_bytes: int  # what janus.rejected holds after both phases
    rejected_messages: int


async def _depth(channel: aio_pika.abc.AbstractChannel) -> int:
    queue = await channel.declare_queue(topology.REJECTED_QUEUE, passive=True)
    return queue.declaration_result.message_count or 0


async def _flood(amqp_url: str, exchange: str, count: int, size: int, expected: int) -> None:
    """Publish `count` messages of `size` bytes (confirmed), then wait until janus.rejected
    holds `expected` messages."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=True)
        body = b'{"job_id": "big", "pad": "' + b"x" * size + b'"}'
        for _ in range(count):
            message = aio_pika.Message(body, content_type="application/json")
            await target.publish(message, routing_key=DEPENDENCY)
        deadline = time.monotonic() + PHASE_TIMEOUT
        while await _depth(channel) < expected:
            if time.monotonic() > deadline:
                raise BenchmarkError(f"janus.rejected never held {expected} messages")
            await asyncio.sleep(0.1)


async def _rejected_bytes(amqp_url: str) -> tuple[int, int]:
    connection = await aio_pika.connect(amqp_url)
    total = messages = 0
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.REJECTED_QUEUE, ensure=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            total += len(message.body)
            messages += 1
    return total, messages


async def run_tree(local: LocalServices, tree: Path, label: str, args: argparse.Namespace) -> Figures:
    async with environment(local, label) as (database_url, amqp_url):
        with tempfile.TemporaryDirectory() as workdir:
            config = Path(workdir) / "janus.toml"
            config.write_text(CONFIG, encoding="utf-8")
            env = {**janus_env(amqp_url, database_url), "PYTHONPATH": str(tree)}
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "import sys, janus, janus.cli; print('janus from', janus.__file__, file=sys.stderr, flush=True); "
                "raise SystemExit(janus.cli.main(['run', '--config', sys.argv[1]]))",
                str(config),
                env=env,
                cwd=tree,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            leader = Leader(process)
            sampler = Sampler(process.pid)
            try:
                await leader.wait_for("leading as", 60.0)
                await asyncio.sleep(2.0)  # its consumers and topology up, its memory settled
                if not any(str(tree) in line for line in leader.lines if line.startswith("janus from")):
                    raise BenchmarkError(f"the leader did not run {tree}: {leader.lines[:3]}")
                rss_before = sampler.now()
                start = len(sampler.samples)
                await _flood(amqp_url, topology.RESULTS_EXCHANGE, args.results, args.size, args.results)
                peak_results = max(sampler.samples[start:], default=sampler.now())
                start = len(sampler.samples)
                total = args.results + args.intake
                await _flood(amqp_url, topology.INTAKE_EXCHANGE, args.intake, args.size, total)
                peak_intake = max(sampler.samples[start:], default=sampler.now())
                await asyncio.sleep(2.0)
                rss_after = sampler.now()
                rejected_bytes, rejected = await _rejected_bytes(amqp_url)
                if process.returncode is not None:
                    raise BenchmarkError(f"janus exited {process.returncode}")
            finally:
                await sampler.stop()
                await leader.stop()
    return Figures(
        tree=label,
        rss_before=rss_before,
        rss_peak_results=peak_results,
        rss_peak_intake=peak_intake,
        rss_after=rss_after,
        rejected_bytes=rejected_bytes,
        rejected_messages=rejected,
    )


def report(figures: Figures, baseline: Figures | None) -> str:
    def ratio(value: int, base: int) -> str:
        return f" (x{value / base:.2f} of the baseline)" if baseline is not None else ""

    peaks = (
        f"peak with the results {figures.rss_peak_results / MB:.0f} MB"
        f"{ratio(figures.rss_peak_results, baseline.rss_peak_results) if baseline else ''}, "
        f"with the intake {figures.rss_peak_intake / MB:.0f} MB"
        f"{ratio(figures.rss_peak_intake, baseline.rss_peak_intake) if baseline else ''}"
    )
    return (
        f"{figures.tree}: RSS {figures.rss_before / MB:.0f} MB before; {peaks}; "
        f"{figures.rss_after / MB:.0f} MB after; janus.rejected holds {figures.rejected_messages} "
        f"messages, {figures.rejected_bytes / MB:.1f} MB"
    )


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--baseline", type=Path, help="a checkout of Janus to compare with (same run)")
    parser.add_argument("--results", type=int, default=40, help="big results (phase 1)")
    parser.add_argument("--intake", type=int, default=60, help="big intake messages (phase 2)")
    parser.add_argument("--size", type=int, default=8_000_000, help="bytes of each message")
    args = parser.parse_args(argv)
    local = LocalServices()
    print(
        f"{args.results} results, then {args.intake} intake messages, of {args.size / MB:.1f} MB each; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    baseline = None
    if args.baseline is not None:
        baseline = await run_tree(local, args.baseline.resolve(), "baseline", args)
        print(report(baseline, None), flush=True)
    figures = await run_tree(local, ROOT, "this_tree", args)
    print(report(figures, baseline), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
