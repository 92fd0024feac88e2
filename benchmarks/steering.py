"""How long a live change takes to be applied by the leader: a pause (applied to the live core)
against a new version of the policy (the core rebuilt from PostgreSQL), with many jobs held.

A leader runs in this process with one dependency whose worker holds `--held` admissions
(handlers that never return within the run) and a backlog of `--jobs` first attempts in
PostgreSQL. Each change is recorded as the commands record it, and timed until the leader
marks it applied (what `janus pause` and `janus apply` wait for, without their start-up).
Prints the median and the worst of `--rounds` of each, and the version's median as a ratio
of the pause's, measured in the same run.

    .venv/bin/python -m benchmarks.steering [--jobs 20000] [--held 500] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from benchmarks._scratch import migrated_scratch
from janus.client import Producer, ReadyJob, Worker
from janus.config import parse_config
from janus.local_services import LocalServices
from janus.policy_record import diff, record_of
from janus.service.app import Service
from janus.service.options import ServiceOptions
from janus.store.repository import Store


async def timed(record: Callable[[], Awaitable[Callable[[], Awaitable[bool]]]]) -> float:
    """Seconds from recording a change to the leader marking it applied."""
    started = time.perf_counter()
    applied = await record()
    while True:  # the commands poll the row as well: the database has no event to wait on
        if await applied():
            return time.perf_counter() - started
        await asyncio.sleep(0.005)


async def run(jobs: int, held: int, rounds: int) -> None:
    local = LocalServices()
    async with migrated_scratch(local, "janus_steerbench") as (database, amqp):
        dependencies = {"api": {"concurrency": held, "lease_timeout": "1h"}}
        config = parse_config(
            {"database_url": database, "amqp_url": amqp, "dependencies": dependencies}, env={}
        )
        service = Service(config, ServiceOptions(serve_metrics=False))
        janus = asyncio.create_task(service.run())
        release = asyncio.Event()

        async def hold(job: ReadyJob) -> None:
            await release.wait()

        worker = Worker(amqp, {"api": hold}, prefetch=held)
        try:
            await asyncio.wait_for(service.leading.wait(), 30)
            await worker.start()
            async with await Producer.connect(amqp) as producer:
                await producer.submit_many(
                    [(f"job-{n}", "api", None, f"s{n % 100}") for n in range(jobs)], window=200
                )
            store = await Store.connect(database)
            policy_log = store.policy_log
            while True:  # until the worker holds all it may: the rebuild restores every one
                scheduler = service.inspector.scheduler
                if scheduler is not None and sum(s.held for s in scheduler.stats()) >= held:
                    break
                await asyncio.sleep(0.05)

            async def pause() -> Callable[[], Awaitable[bool]]:
                kind = "pause" if len(pauses) % 2 == 0 else "resume"
                row, _ = await policy_log.record_steering(
                    dependency="api", kind=kind, lasts=None, actor="bench", reason=None
                )
                return lambda: policy_log.steering_applied(row)

            async def version() -> Callable[[], Awaitable[bool]]:
                weight = 1.0 + len(versions)  # a change the rebuild must apply
                changed = dict(
                    dependencies, api={**dependencies["api"], "fairness": {"default_weight": weight}}
                )
                record = record_of(parse_config({"dependencies": changed}, env={}))
                number, _ = await policy_log.record_version(
                    record, "bench", None, lambda old: diff(old, record)
                )

                async def runs() -> bool:
                    running = await policy_log.running_version()
                    return running is not None and running >= number

                return runs

            pauses: list[float] = []
            versions: list[float] = []
            for _ in range(rounds):
                pauses.append(await timed(pause))
                versions.append(await timed(version))
            await store.close()
        finally:
            release.set()
            await worker.stop()
            service.stop.set()
            await asyncio.wait_for(janus, 60)
    print(
        f"{jobs} jobs, {held} held, {rounds} rounds; seconds from recording a change to the leader applying it"
    )
    for name, figures in (("pause/resume", pauses), ("new version", versions)):
        print(f"  {name:<13} median {statistics.median(figures):.3f} s, worst {max(figures):.3f} s")
    ratio = statistics.median(versions) / statistics.median(pauses)
    print(f"  a version takes {ratio:.2f}x a pause (same run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--held", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(run(args.jobs, args.held, args.rounds))


if __name__ == "__main__":
    main()
