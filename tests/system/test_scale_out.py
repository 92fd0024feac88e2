"""Scale-out's member mode with whole `janus run` processes against real services
(docs/scale-out.md): the processes share six limited dependencies, each led by one of them;
kill -9 one, start a fourth. Judged at the workers (`janus.audit`) and in the admissions table."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from janus.client import Producer, ReadyJob, Worker
from tests.integration.harness import RecordLog, janus_cli, wait_for_states
from tests.system.janus_process import DEFAULT_TIMINGS, JanusProcess
from tests.system.judge import MakeJanus, admissions_by_epoch, assert_epochs_in_turn, http_get, judge, outputs
from tests.system.private_services import free_port

pytestmark = pytest.mark.system

DEPENDENCIES = [f"d{i}" for i in range(6)]

HEAD = """
database_url = "{database}"
amqp_url = "{amqp}"

[scale_out]
enabled = true
"""

DEPENDENCY = """
[dependencies.{name}]
rate_limits = ["{rate}/1s"]
concurrency = {concurrency}
lease_timeout = "3s"
admission_ttl = "0.5s"

[dependencies.{name}.retry]
base_delay = "0.1s"
max_delay = "0.5s"
max_attempts = {attempts}
"""


class TimedProcess(JanusProcess):
    """A JanusProcess that notes when (wall clock) each log line arrived: the pauses of a move."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.times: list[float] = []

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            self.times.append(time.time())
            self.lines.append(raw.decode(errors="replace").rstrip())
            async with self._changed:
                self._changed.notify_all()


def move_pauses(processes: list[TimedProcess], since: float) -> dict[str, float]:
    """For each dependency whose member term began to drain after `since`: seconds from then (it
    admits no more there) to the next term of any process admitting for it."""
    ends: list[tuple[float, list[str]]] = []
    starts: list[tuple[float, set[str]]] = []
    for process in processes:
        current: list[str] = []
        for at, line in zip(process.times, process.lines, strict=True):
            match = _ADMITTING.search(line)
            if match:
                current = [name for name, _ in _LED.findall(match.group(1))]
                if at > since:
                    starts.append((at, set(current)))
            elif "member term over" in line and "draining" in line and at > since:
                ends.append((at, current))  # it admits no more from here
    pauses: dict[str, float] = {}
    for ended, names in ends:
        for name in names:
            later = [at for at, led_ in starts if at >= ended and name in led_]
            if later:
                pauses[name] = max(pauses.get(name, 0.0), min(later) - ended)
    return pauses


_ADMITTING = re.compile(r"admitting for (.+) as \S+$")
_LED = re.compile(r"(\w+) \(epoch (\d+)\)")


def write_config(
    tmp_path: Path, database: str, amqp: str, dependencies: list[str], attempts: int = 20
) -> Path:
    path = tmp_path / "janus.toml"
    text = HEAD.format(database=database, amqp=amqp)
    for index, name in enumerate(dependencies):
        text += DEPENDENCY.format(
            name=name, rate=15 + 5 * (index % 3), concurrency=3 + index % 2, attempts=attempts
        )
    path.write_text(text)
    return path


def led(process: JanusProcess) -> dict[str, int]:
    """What the process's latest member term admits for: dependency -> epoch (its log)."""
    for line in reversed(process.lines):
        match = _ADMITTING.search(line)
        if match:
            return {name: int(epoch) for name, epoch in _LED.findall(match.group(1))}
        if "member term over" in line:
            return {}
    return {}


async def until(
    predicate: Callable[[], bool], timeout: float, what: str, processes: list[JanusProcess]
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"{what}: not within {timeout} s\n{outputs(processes)}")
        await asyncio.sleep(0.05)


class Traffic:
    def __init__(self, amqp: str, dependencies: list[str]) -> None:
        self.amqp = amqp
        self.dependencies = dependencies
        self.log = RecordLog()
        self.submitted: list[str] = []
        self._rng = random.Random(21)
        self._worker: Worker | None = None
        self.doomed = True  # jobs named doomed-* fail while this holds

    async def _handle(self, job: ReadyJob) -> None:
        await asyncio.sleep(self._rng.uniform(0.02, 0.1))
        if job.job_id.startswith("doomed") and self.doomed:
            raise RuntimeError("declined")

    async def start_worker(self) -> None:
        self._worker = Worker(
            self.amqp, dict.fromkeys(self.dependencies, self._handle), on_record=self.log.append
        )
        await self._worker.start()

    async def stop_worker(self) -> None:
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None

    async def feed(self, tag: str, per_dependency: int, seconds: float) -> None:
        """`per_dependency` jobs of each dependency, spread over `seconds`."""
        rounds = 10
        async with await Producer.connect(self.amqp) as producer:
            for round_ in range(rounds):
                jobs = [
                    (f"{tag}-{d}-{round_}-{i}", d, None, f"s{i % 2}")
                    for d in DEPENDENCIES
                    for i in range(per_dependency // rounds)
                ]
                await producer.submit_many(jobs, window=50)
                self.submitted.extend(job[0] for job in jobs)
                await asyncio.sleep(seconds / rounds)

    def starts_of(self, dependency: str) -> list[float]:
        return sorted(
            r.started_at for r in self.log.records if r.dependency == dependency and r.started_at is not None
        )


def admitting_after(processes: list[TimedProcess], dependency: str, at: float) -> float | None:
    """Seconds from `at` (wall clock) to the first member term of any process admitting for
    `dependency` (its log line `admitting for ...`, noted as it arrived)."""
    found = [
        when
        for process in processes
        for when, line in zip(process.times, process.lines, strict=True)
        if when > at
        and (match := _ADMITTING.search(line))
        and dependency in dict(_LED.findall(match.group(1)))
    ]
    return min(found) - at if found else None


def resumed_after(traffic: Traffic, dependency: str, at: float) -> float | None:
    """Seconds from `at` (wall clock) to the first start of `dependency` at a worker after it."""
    later = [t for t in traffic.starts_of(dependency) if t > at]
    return later[0] - at if later else None


def longest_gap(starts: list[float], since: float, until_: float) -> float:
    inside = [t for t in starts if since <= t <= until_]
    return max((b - a for a, b in itertools.pairwise(inside)), default=0.0)


async def test_one_member_alone_owns_everything(
    database: str, vhost: str, tmp_path: Path, janus_process: MakeJanus
) -> None:
    config_path = write_config(tmp_path, database, vhost, DEPENDENCIES[:2], attempts=2)
    port = free_port()
    alone = janus_process(config_path, "alone", {**DEFAULT_TIMINGS, "JANUS_HTTP_PORT": str(port)})
    await alone.start()
    traffic = Traffic(vhost, DEPENDENCIES[:2])
    try:
        await until(lambda: set(led(alone)) == {"d0", "d1"}, 30, "the member leads both", [alone])
        readyz: list[tuple[int, str]] = []

        def ready() -> bool:
            readyz.append(http_get(f"http://127.0.0.1:{port}/readyz"))
            return readyz[-1][0] == 200

        # A member's readiness is read back from the database (service/owners.py, once a second).
        await until(ready, 5, "/readyz ready once the member leads its share", [alone])
        answer = json.loads(readyz[-1][1])
        assert (answer["role"], answer["member"]["share"]) == ("leading", ["d0", "d1"]), answer
        _, metrics = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
        assert 'janus_dependency_led{dependency="d0"} 1.0' in metrics
        assert 'janus_dependency_led{dependency="d1"} 1.0' in metrics
        await traffic.start_worker()
        async with await Producer.connect(vhost) as producer:
            jobs = [(f"one-{d}-{i}", d, None, "s") for d in ("d0", "d1") for i in range(20)]
            await producer.submit_many(jobs, window=50)
        traffic.submitted.extend(job[0] for job in jobs)
        expected = set(traffic.submitted)
        await traffic.log.wait_for(lambda _: expected <= traffic.log.succeeded(), timeout=30)
        await wait_for_states(
            database, lambda rows: all(rows[j]["state"] == "succeeded" for j in expected), 30
        )
        # Steering reaches the owner: `janus pause` is applied (and said so) by the member term.
        code, out, err = await janus_cli("pause", "d0", "--actor", "alice", database=database)
        assert code == 0, err + alone.output()
        assert "applied the pause" in out
        paused = time.time()
        async with await Producer.connect(vhost) as producer:
            more = [(f"two-{d}-{i}", d, None, "s") for d in ("d0", "d1") for i in range(10)]
            await producer.submit_many(more, window=50)
        await traffic.log.wait_for(
            lambda _: {f"two-d1-{i}" for i in range(10)} <= traffic.log.succeeded(), 30
        )
        await asyncio.sleep(1.0)
        assert not [r for r in traffic.log.records if r.dependency == "d0" and r.received_at > paused]
        code, out, err = await janus_cli("resume", "d0", "--actor", "alice", database=database)
        assert code == 0, err
        await traffic.log.wait_for(lambda _: {job[0] for job in more} <= traffic.log.succeeded(), 30)
        connection = await asyncpg.connect(database)
        try:
            marks = await connection.fetch("SELECT applied_epoch FROM janus.steering WHERE dependency = 'd0'")
        finally:
            await connection.close()
        assert [r[0] for r in marks] == [led(alone)["d0"]] * 2, "each marked with d0's epoch"
        # `janus jobs retry`: the global holder revives a dead job, its owner's term takes it.
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([("doomed-1", "d1", None, "s")])
        await wait_for_states(database, lambda rows: rows.get("doomed-1", {}).get("state") == "dead", 30)
        traffic.doomed = False
        code, out, err = await janus_cli("jobs", "retry", "doomed-1", database=database)
        assert code == 0, err + alone.output()
        assert "made 1 dead job eligible again" in out
        await traffic.log.wait_for(lambda _: "doomed-1" in traffic.log.succeeded(), 30)
    finally:
        await traffic.stop_worker()
        assert await alone.terminate() == 0, alone.output()
    assert any("handed d0 over" in line for line in alone.lines), alone.output()


async def test_three_members_kill_one_then_a_fourth_joins(database: str, vhost: str, tmp_path: Path) -> None:
    """Default timings (lease 3 s, poll 0.5 s): every dependency of a killed member resumes
    within 5 s; a fourth member takes its share by handover; limits hold at the workers."""
    processes: list[JanusProcess] = []
    try:
        await three_members_kill_one_then_a_fourth_joins(database, vhost, tmp_path, processes)
    finally:
        for process in processes:  # none outlives the test, even a failing one
            await process.ensure_stopped()


async def three_members_kill_one_then_a_fourth_joins(
    database: str, vhost: str, tmp_path: Path, processes: list[JanusProcess]
) -> None:
    config_path = write_config(tmp_path, database, vhost, DEPENDENCIES)
    processes += [TimedProcess(config_path, name=f"m{i}", env=DEFAULT_TIMINGS) for i in range(3)]
    await asyncio.gather(*(p.start() for p in processes))

    def owners() -> dict[str, list[str]]:
        found: dict[str, list[str]] = defaultdict(list)
        for process in processes:
            if process.running:
                for dependency in led(process):
                    found[dependency].append(process.name)
        return found

    def settled(count: int) -> bool:
        found = owners()
        loads = [len(led(p)) for p in processes if p.running]
        return (
            set(found) == set(DEPENDENCIES)
            and all(len(v) == 1 for v in found.values())
            and len(loads) == count
            and max(loads) - min(loads) <= 1
        )

    await until(lambda: settled(3), 40, "three members settle 2/2/2", processes)
    traffic = Traffic(vhost, DEPENDENCIES)
    await traffic.start_worker()
    feeding = asyncio.create_task(traffic.feed("so", per_dependency=200, seconds=24))
    try:
        await asyncio.sleep(5)
        victim = processes[1]
        orphans = sorted(led(victim))
        await victim.kill()
        killed_wall = time.time()
        await until(
            lambda: settled(2) and set(orphans) <= set(owners()), 15, "the survivors take over", processes
        )
        await asyncio.sleep(2.5)  # jobs flow again
        resumed = {d: resumed_after(traffic, d, killed_wall) for d in orphans}
        timed = [p for p in processes if isinstance(p, TimedProcess)]
        taken = {d: admitting_after(timed, d, killed_wall) for d in orphans}
        print(
            "after kill -9, a survivor's term admitting for each orphaned dependency: "
            + ", ".join(f"{d} {t:.2f} s" if t is not None else f"{d} none" for d, t in taken.items())
        )
        print(
            "after kill -9, first start at a worker per orphaned dependency: "
            + ", ".join(f"{d} {t:.2f} s" if t is not None else f"{d} none" for d, t in resumed.items())
        )

        fourth = TimedProcess(config_path, name="m3", env=DEFAULT_TIMINGS)
        processes.append(fourth)
        joined_wall = time.time()
        await fourth.start()
        await until(lambda: settled(3) and len(led(fourth)) == 2, 30, "the fourth takes its share", processes)
        moved_wall = time.time()
        await feeding
        expected = set(traffic.submitted)
        await traffic.log.wait_for(lambda _: expected <= traffic.log.succeeded(), timeout=60)
        await wait_for_states(
            database, lambda rows: all(rows[j]["state"] in ("succeeded", "dead") for j in expected), 60
        )
    finally:
        feeding.cancel()
        await traffic.stop_worker()
        for process in processes:
            if process.running:
                assert await process.terminate() == 0, process.output()

    assert all(t is not None and t < 5.0 for t in taken.values()), taken
    timed = [p for p in processes if isinstance(p, TimedProcess)]
    assert isinstance(fourth, TimedProcess)
    steps = [
        (at - joined_wall, line.split(" ", 3)[-1][:90])
        for at, line in zip(fourth.times, fourth.lines, strict=True)
        if any(word in line for word in ("starting as", "leading", "admitting for", "draining"))
    ]
    print("the fourth, from its start: " + "; ".join(f"{t:.2f} s {what}" for t, what in steps))
    # Every term ended by a drain (a handover, a gain, a stop), none by a lost lease.
    abrupt = [
        line for p in processes for line in p.lines if "member term over" in line and "lease_lost" in line
    ]
    assert abrupt == [], abrupt
    drains = move_pauses(timed, joined_wall)
    print(
        "the join's pause per dependency, from a term's drain to the next term admitting for it "
        "(drain + handover + claim + rebuild): "
        + ", ".join(f"{d} {p:.2f} s" for d, p in sorted(drains.items()))
    )
    # Where those pauses went: each term's drain, and the steps of building the next (member_mode.py).
    for process in timed:
        for at, line in zip(process.times, process.lines, strict=True):
            if at > joined_wall and ("member term built" in line or "ended after" in line):
                print(f"{process.name} +{at - joined_wall:.2f} s: {line.split(' ', 3)[-1][:330]}")
    assert drains, "no member term ended after the join"
    assert max(drains.values()) < 5.0, drains
    pauses = {d: longest_gap(traffic.starts_of(d), joined_wall, moved_wall + 1.0) for d in DEPENDENCIES}
    print(
        f"the fourth took its share in {moved_wall - joined_wall:.2f} s; longest pause at the workers "
        "per dependency meanwhile: " + ", ".join(f"{d} {p:.2f} s" for d, p in pauses.items())
    )

    await judge(traffic, config_path, database)
    # Per dependency, one epoch at a time: each epoch's admissions all precede the next's.
    for dependency, spans in (await admissions_by_epoch(database)).items():
        assert_epochs_in_turn(spans, f"{dependency}: ")
