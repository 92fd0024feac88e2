"""`janus demo`: Janus, producers and workers on the local services, watched live.

What a newcomer should see in a minute: tenants flood three simulated APIs; Janus
admits their jobs within the configured budgets (the APIs check their own limits
on every call and never have to refuse one), shares each budget between tenants,
retries failures with backoff until they succeed or die, and never runs a
re-published job twice. At the end, the audit of what the workers saw judges the
run. Everything runs in this process, on a database and a RabbitMQ vhost of its
own, so the demo disturbs nothing else.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import os
import random
import sys
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from pydantic import JsonValue

from janus.audit import AuditReport, audit, start_window
from janus.client import Producer, ReadyJob, RetryAfter, Worker, WorkRecord
from janus.config import JanusConfig, load_config
from janus.core.policy import DependencyPolicy
from janus.errors import JanusError
from janus.local_services import LocalServices, check_database_name
from janus.service.app import Service, ServiceOptions

CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "demo.toml"
VHOST_PREFIX = "janus-demo-"  # + a tag of the run: two demos on one broker do not meet
LOCAL = LocalServices()
START_TIMEOUT = 30.0
DRAIN_TIMEOUT = 120.0  # after production ends, how long the last jobs may take
STOP_TIMEOUT = 30.0
WORKERS = 2  # competing consumers: the budgets hold across workers, not per worker


# -- the simulated world ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Profile:
    """How one simulated API behaves, and how much work the tenants send it."""

    latency: tuple[float, float]  # seconds per call, drawn uniformly
    failure_rate: float  # chance that a call fails with a transient server error
    declined_rate: float = 0.0  # share of jobs the API always refuses: they end dead
    burst_per_second: float  # the heavy tenant publishes this many × duration at once
    trickle_per_second: float  # each light tenant, steadily


PROFILES = {
    # More than 600 jobs in 20 s: the 600/20s limit pauses payments for a few seconds.
    "payments-api": Profile(
        latency=(0.02, 0.15),
        failure_rate=0.05,
        declined_rate=0.01,
        burst_per_second=28.0,
        trickle_per_second=1.5,
    ),
    # Slow calls: its 4 slots run out before its rate limit does.
    "email": Profile(latency=(0.05, 0.4), failure_rate=0.10, burst_per_second=6.0, trickle_per_second=1.0),
    "geocoder": Profile(
        latency=(0.02, 0.15), failure_rate=0.30, burst_per_second=8.0, trickle_per_second=1.5
    ),
}
# For dependencies someone adds to config/demo.toml.
DEFAULT_PROFILE = Profile(
    latency=(0.02, 0.15), failure_rate=0.10, burst_per_second=5.0, trickle_per_second=1.0
)

HEAVY_TENANT = "acme"
LIGHT_TENANTS = ("globex", "initech", "umbrella")
DUPLICATES_PER_SECOND = 2.0  # ids published again, as a producer retrying after a timeout would
PRODUCER_TICK = 0.25
DEAD_SHOWN = 8

_TRANSIENT_ERRORS = ("503 Service Unavailable", "502 Bad Gateway", "504 Gateway Timeout", "connection reset")


class ApiError(Exception):
    """A simulated call failed; the worker reports it and Janus decides whether to retry."""


class SimulatedApi:
    """An external API that checks its own rate limits on every call, as a real one answering 429 would.

    A limit COUNT/T that counts starts (the default) promises at most COUNT calls in any
    window T at the API, by call time; one that counts admissions promises COUNT calls
    in any T − admission_ttl (`janus.audit.start_window`, which the audit checks too).
    That is what this API enforces: a 429 here is a broken promise.
    """

    def __init__(
        self,
        policy: DependencyPolicy,
        profile: Profile,
        rng: random.Random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.profile = profile
        self.windows = [
            (limit.count, start_window(limit, policy.admission_ttl)) for limit in policy.rate_limits
        ]
        self._calls: list[deque[float]] = [deque() for _ in self.windows]
        self._rng = rng
        self._clock = clock
        self.calls = 0
        self.refused = 0  # 429s: must stay 0 with Janus in front
        self.in_flight = 0
        self._peak = 0  # most calls in flight since the last `take_peak`

    def take_peak(self) -> int:
        peak, self._peak = self._peak, self.in_flight
        return peak

    async def call(self, job: ReadyJob) -> None:
        now = self._clock()
        for (count, window), calls in zip(self.windows, self._calls, strict=True):
            while calls and calls[0] + window <= now:
                calls.popleft()
            if len(calls) >= count:
                self.refused += 1
                raise RetryAfter(calls[0] + window - now, f"429 Too Many Requests ({count} per {window:g}s)")
        for calls in self._calls:
            calls.append(now)
        self.calls += 1
        self.in_flight += 1
        self._peak = max(self._peak, self.in_flight)
        try:
            await asyncio.sleep(self._rng.uniform(*self.profile.latency))
        finally:
            self.in_flight -= 1
        if isinstance(job.payload, dict) and job.payload.get("declined"):
            raise ApiError("402 card declined")
        if self._rng.random() < self.profile.failure_rate:
            raise ApiError(self._rng.choice(_TRANSIENT_ERRORS))


# -- producing --------------------------------------------------------------------


Job = tuple[str, str, JsonValue, str]  # (job_id, dependency, payload, scope), as submit_many takes


@dataclass(frozen=True, kw_only=True, slots=True)
class Submission:
    dependency: str
    scope: str
    at: float  # Unix seconds of the first publication


class Load:
    """The tenants' jobs: what was published, when, and how many ids were published again."""

    def __init__(self, profiles: dict[str, Profile], duration: float, rng: random.Random) -> None:
        self.profiles = profiles
        self.duration = duration
        self.submitted: dict[str, Submission] = {}
        self.republished = 0
        self._rng = rng
        self._sent: list[Job] = []
        self._numbers: Counter[tuple[str, str]] = Counter()

    def burst_size(self, dependency: str) -> int:
        return round(self.profiles[dependency].burst_per_second * self.duration)

    def _new(self, dependency: str, scope: str) -> Job:
        self._numbers[(scope, dependency)] += 1
        number = self._numbers[(scope, dependency)]
        job_id = f"{scope}-{dependency}-{number:05d}"
        payload: dict[str, JsonValue] = {"tenant": scope, "n": number}
        if self._rng.random() < self.profiles[dependency].declined_rate:
            payload["declined"] = True
        job: Job = (job_id, dependency, payload, scope)
        self.submitted[job_id] = Submission(dependency=dependency, scope=scope, at=time.time())
        self._sent.append(job)
        return job

    def burst(self) -> Iterator[Job]:
        """The heavy tenant's jobs for every dependency, interleaved, generated as they are published."""
        plans = [itertools.repeat(dependency, self.burst_size(dependency)) for dependency in self.profiles]
        for dependencies in itertools.zip_longest(*plans):
            for dependency in dependencies:
                if dependency is not None:
                    yield self._new(dependency, HEAVY_TENANT)

    def trickle_due(self, elapsed: float) -> list[Job]:
        """The light tenants' jobs owed by `elapsed` seconds, plus a few ids published again."""
        jobs: list[Job] = []
        for scope in LIGHT_TENANTS:
            for dependency, profile in self.profiles.items():
                due = int(profile.trickle_per_second * elapsed) - self._numbers[(scope, dependency)]
                jobs.extend(self._new(dependency, scope) for _ in range(due))
        again = int(DUPLICATES_PER_SECOND * elapsed) - self.republished
        if again > 0 and self._sent:
            jobs.extend(self._rng.choice(self._sent) for _ in range(again))
            self.republished += again
        return jobs


async def _produce(producer: Producer, load: Load) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.TaskGroup() as group:
        group.create_task(producer.submit_many(load.burst()), name="burst")
        tick = 0
        while True:
            tick += 1
            await asyncio.sleep(max(start + tick * PRODUCER_TICK - loop.time(), 0.0))
            elapsed = min(loop.time() - start, load.duration)
            await producer.submit_many(load.trickle_due(elapsed))
            if elapsed >= load.duration:
                return


# -- watching ---------------------------------------------------------------------


class Tally:
    """What the workers saw, indexed for the progress lines and the summary."""

    def __init__(self, dependencies: Sequence[str]) -> None:
        self.records: list[WorkRecord] = []
        self.admitted: dict[str, list[float]] = {name: [] for name in dependencies}  # sorted
        self.succeeded: dict[str, set[str]] = {name: set() for name in dependencies}
        self.failures: Counter[str] = Counter()

    def add(self, record: WorkRecord) -> None:
        self.records.append(record)
        bisect.insort(self.admitted[record.dependency], record.admitted_at)
        if record.outcome == "success":
            self.succeeded[record.dependency].add(record.job_id)
        elif record.outcome == "failure":
            self.failures[record.dependency] += 1

    def admitted_since(self, dependency: str, since: float) -> int:
        stamps = self.admitted[dependency]
        return len(stamps) - bisect.bisect_right(stamps, since)

    def all_succeeded(self) -> set[str]:
        return set().union(*self.succeeded.values())


@dataclass(frozen=True, kw_only=True, slots=True)
class Recorded:
    """What PostgreSQL holds: the jobs Janus gave up on, and how many jobs it has finished."""

    dead: dict[str, str]  # job_id -> dependency; only the database knows which jobs are dead
    last_errors: dict[str, str]  # job_id -> the error of a dead job's last attempt
    finished: int  # succeeded or dead: Janus has processed the job's last result


async def _recorded(db: asyncpg.Connection) -> Recorded:
    rows = await db.fetch(
        "SELECT job_id, dependency, last_error FROM janus.jobs WHERE state = 'dead' ORDER BY finished_at"
    )
    finished = await db.fetchval("SELECT count(*) FROM janus.jobs WHERE state IN ('succeeded', 'dead')")
    return Recorded(
        dead={row["job_id"]: row["dependency"] for row in rows},
        last_errors={row["job_id"]: row["last_error"] or "" for row in rows},
        finished=int(finished),
    )


def _gauge(service: Service, name: str, labels: dict[str, str]) -> int:
    value = service.metrics.registry.get_sample_value(name, labels)
    return int(value) if value is not None else 0


def _columns(rows: Sequence[Sequence[str]], *, left: Collection[int] = (0,)) -> list[str]:
    """Rows as aligned text: the columns in `left` left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


@dataclass(kw_only=True)
class World:
    """Everything the demo runs and watches, in one place for the progress and summary code."""

    service: Service
    policies: list[DependencyPolicy]
    apis: dict[str, SimulatedApi]
    tally: Tally
    load: Load
    _widths: list[int] = field(default_factory=list, init=False)  # of the progress columns

    def finished(self, dead: dict[str, str]) -> int:
        return len((self.tally.all_succeeded() | dead.keys()) & self.load.submitted.keys())

    def progress(self, elapsed: float, phase: str, dead: dict[str, str]) -> str:
        load, tally = self.load, self.tally
        header = (
            f"[{elapsed:3.0f}s] {phase}: submitted {len(load.submitted)}, re-sent {load.republished}, "
            f"finished {self.finished(dead)}"
        )
        dead_by_dependency = Counter(dead.values())
        now = self.service.clock()  # admitted_at is on the database's clock, as Janus's is
        slots = max(len(p.rate_limits) for p in self.policies)
        labels = ["", *[""] * slots, "in flight", "waiting", "done", "retried", "dead", "429s"]
        rows = []
        for policy in self.policies:
            name = policy.name
            rates = [
                f"{tally.admitted_since(name, now - limit.window)}/{limit.count} per {limit.window:g}s"
                for limit in policy.rate_limits
            ]
            ready = _gauge(self.service, "janus_waiting_jobs", {"dependency": name, "kind": "ready"})
            delayed = _gauge(self.service, "janus_waiting_jobs", {"dependency": name, "kind": "delayed"})
            dead_here = dead_by_dependency[name]
            rows.append(
                [
                    name,
                    *rates,
                    *[""] * (slots - len(rates)),
                    f"{self.apis[name].take_peak()}/{policy.concurrency or '-'}",
                    f"{ready}+{delayed}",
                    str(len(tally.succeeded[name])),
                    str(tally.failures[name] - dead_here),
                    str(dead_here),
                    str(self.apis[name].refused),
                ]
            )
        # Widths only grow, so that the columns stay put from one second to the next.
        for i in range(len(labels)):
            width = max(len(row[i]) for row in rows)
            if i < len(self._widths):
                self._widths[i] = max(self._widths[i], width)
            else:
                self._widths.append(width)
        lines = [header]
        for row in rows:
            cells = [row[0].ljust(self._widths[0])]
            for label, value, width in zip(labels[1:], row[1:], self._widths[1:], strict=True):
                cells.append(f"{label} {value.rjust(width)}" if label else value.rjust(width))
            lines.append("  " + "  ".join(cells))
        return "\n".join(lines)


# -- setting up and tearing down --------------------------------------------------


async def _until_leading(service: Service, task: asyncio.Task[None]) -> None:
    leading = asyncio.ensure_future(service.leading.wait())
    try:
        done, _ = await asyncio.wait(
            {leading, task}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        leading.cancel()
    if task in done:
        task.result()  # raises what stopped it
        raise JanusError("Janus stopped before it started leading")
    if leading not in done:
        raise JanusError(f"Janus did not start leading within {START_TIMEOUT:g}s")


def _describe(error: BaseException) -> str:
    """The failures inside a task group's ExceptionGroup, one after another."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in error.exceptions)
    return f"{type(error).__name__}: {error}"


async def _stop_service(service: Service, task: asyncio.Task[None]) -> BaseException | None:
    """Let Janus drain and stop; what it failed with, if it did."""
    service.stop.set()
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=STOP_TIMEOUT)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return TimeoutError(f"it did not stop within {STOP_TIMEOUT:g}s")
    except Exception as exc:
        return exc
    return None


# -- the run ----------------------------------------------------------------------


@dataclass(kw_only=True)
class Outcome:
    elapsed: float
    recorded: Recorded
    problem: str | None = None  # why not every job finished


async def _watch(
    world: World, service_task: asyncio.Task[None], production: asyncio.Task[None], db: asyncpg.Connection
) -> Outcome:
    """Print progress once a second until every job has finished, or the deadline passes."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline: float | None = None
    second = 0
    while True:
        second += 1
        await asyncio.sleep(max(start + second - loop.time(), 0.0))
        elapsed = loop.time() - start
        recorded = await _recorded(db)
        if service_task.done():
            return Outcome(elapsed=elapsed, recorded=recorded, problem="Janus stopped during the run")
        if production.done():
            production.result()  # a producer that failed ends the demo with its error
            if deadline is None:
                deadline = loop.time() + DRAIN_TIMEOUT
        phase = "producing" if deadline is None else "draining"
        print(world.progress(elapsed, phase, recorded.dead), flush=True)
        if deadline is None:
            continue
        # Finished as the workers saw it, and as Janus recorded it (so the database is final too).
        submitted = world.load.submitted.keys()
        seen_finished = submitted <= world.tally.all_succeeded() | recorded.dead.keys()
        if seen_finished and recorded.finished == len(submitted):
            return Outcome(elapsed=elapsed, recorded=recorded)
        if loop.time() >= deadline:
            problem = f"jobs still unfinished {DRAIN_TIMEOUT:g}s after production ended"
            return Outcome(elapsed=elapsed, recorded=recorded, problem=problem)


def _take_back_cancellation() -> None:
    """Undo the cancellation that Ctrl-C makes asyncio.run send to the main task.

    So the clean-up can still wait on things, and the demo returns its exit code.
    """
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def _run(world: World, config: JanusConfig) -> Outcome | None:
    """Janus, workers, producer and progress until every job has finished; None if interrupted."""
    service = world.service
    service_task = asyncio.create_task(service.run(), name="janus")
    workers: list[Worker] = []
    db: asyncpg.Connection | None = None
    outcome: Outcome | None = None
    try:
        await _until_leading(service, service_task)
        db = await asyncpg.connect(config.database_url)
        for index in range(1, WORKERS + 1):
            worker = Worker(
                config.amqp_url,
                {name: api.call for name, api in world.apis.items()},
                on_record=world.tally.add,
                name=f"janus-demo-worker-{index}",
            )
            workers.append(worker)
            await worker.start()
        async with await Producer.connect(config.amqp_url, name="janus-demo-producer") as producer:
            production = asyncio.create_task(_produce(producer, world.load), name="producer")
            try:
                outcome = await _watch(world, service_task, production, db)
            finally:
                # Before the connection closes under it; whatever it failed with by now is a
                # consequence of why the run ended, which is reported instead.
                production.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await production
    except asyncio.CancelledError:
        _take_back_cancellation()
        print("\nstopping the producer, Janus and the workers", flush=True)
    finally:
        # Janus first, so that no new admission reaches a stopping worker; then wait out
        # the admissions already published, which expire within admission_ttl.
        janus_error = await _stop_service(service, service_task)
        if workers:
            await asyncio.sleep(max(p.admission_ttl for p in world.policies))
        for worker in workers:
            await worker.stop()  # running handlers finish and report first
        if db is not None:
            await db.close()
    if outcome is not None and janus_error is not None:
        outcome.problem = f"Janus failed: {_describe(janus_error)}"
    return outcome


async def run_demo(*, duration: float, database: str) -> int:
    if "JANUS_LOG_LEVEL" not in os.environ:
        # The service's routine INFO lines would break up the progress display.
        logging.getLogger("janus").setLevel(logging.WARNING)
    check_database_name(database)
    in_use = await LOCAL.connections_to(database)
    if in_use:
        # Recreating it would cut another demo (or anything else) off its database mid-run.
        print(
            f"janus demo: the database {database} has {in_use} open connection(s), another demo's "
            "perhaps: stop it, or choose another with --database NAME",
            file=sys.stderr,
        )
        return 2
    vhost = f"{VHOST_PREFIX}{uuid.uuid4().hex[:8]}"
    config = load_config(CONFIG_PATH).model_copy(
        update={"database_url": LOCAL.pg_url(database), "amqp_url": LOCAL.amqp_url(vhost)}
    )
    policies = config.policies()
    rng = random.Random()
    profiles = {p.name: PROFILES.get(p.name, DEFAULT_PROFILE) for p in policies}
    world = World(
        service=Service(config, ServiceOptions(serve_metrics=False)),
        policies=policies,
        apis={p.name: SimulatedApi(p, profiles[p.name], rng) for p in policies},
        tally=Tally([p.name for p in policies]),
        load=Load(profiles, duration, rng),
    )
    _print_intro(world, config)
    try:
        await LOCAL.create_database(database, replace=True)
        try:
            await LOCAL.create_vhost(vhost)
            outcome = await _run(world, config)
        finally:
            with contextlib.suppress(JanusError):
                await LOCAL.delete_vhost(vhost)
    except asyncio.CancelledError:  # Ctrl-C while setting up: nothing runs yet
        _take_back_cancellation()
        outcome = None
    if outcome is None:
        print("interrupted", flush=True)
        return 130
    code = _print_summary(world, outcome)
    print(
        f"\nThe vhost {vhost} is deleted; the jobs stay in PostgreSQL:\n"
        f"  psql {config.database_url} -c "
        "'SELECT dependency, state, count(*) FROM janus.jobs GROUP BY 1, 2 ORDER BY 1, 2'"
    )
    return code


# -- reporting --------------------------------------------------------------------


def _print_intro(world: World, config: JanusConfig) -> None:
    load = world.load
    print(
        f"Janus demo: {load.duration:g}s of traffic from {1 + len(LIGHT_TENANTS)} tenants to "
        f"{len(world.policies)} simulated APIs, then until every job has finished."
    )
    print(f"  policy    {CONFIG_PATH}")
    print(f"  database  {config.database_url} (recreated)")
    print(f"  broker    {config.amqp_url} (new vhost)\n")
    width = max(len(p.name) for p in world.policies)
    for policy in world.policies:
        api = world.apis[policy.name]
        profile = api.profile
        limits = ", ".join(str(limit) for limit in policy.rate_limits) or "no rate limit"
        low, high = (round(seconds * 1000) for seconds in profile.latency)
        declined = f", {profile.declined_rate:.0%} always declined" if profile.declined_rate else ""
        allows = ", ".join(f"{count} per {window:g}s" for count, window in api.windows) or "any rate"
        print(f"  {policy.name:<{width}}  Janus: {limits}; concurrency {policy.concurrency or 'unlimited'}")
        print(
            f"  {'':<{width}}  API:   calls take {low}-{high} ms, {profile.failure_rate:.0%} fail{declined}; "
            f"allows {allows}"
        )
    burst = sum(load.burst_size(name) for name in load.profiles)
    trickle = sum(p.trickle_per_second for p in load.profiles.values())
    print(
        f"\nTenants: {HEAVY_TENANT} publishes {burst} jobs at once; {', '.join(LIGHT_TENANTS)} publish "
        f"{trickle:g} jobs/s each;\n{DUPLICATES_PER_SECOND:g} job ids a second are published again "
        "(they must not run twice).\n"
        "Each API counts its calls over its rate windows, by call time, and answers 429 past its\n"
        "limits: with Janus in front, never.\n"
        "Columns: admitted in the last window / limit; most calls in flight in the last second /\n"
        "concurrency; waiting jobs (eligible + in retry backoff); jobs done, retries, dead jobs; 429s.\n",
        flush=True,
    )


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _print_summary(world: World, outcome: Outcome) -> int:
    load, dead = world.load, outcome.recorded.dead
    report = audit(
        world.tally.records,
        {p.name: p for p in world.policies},
        expected_jobs=load.submitted.keys(),
        dead_jobs=dead.keys(),
    )
    state = outcome.problem or "every job finished"
    print(f"\n== after {outcome.elapsed:.0f}s: {len(load.submitted)} jobs, {state} ==\n")
    _print_dependencies(world, report, dead)
    _print_tenants(world, dead)
    if dead:
        shown = list(dead)[:DEAD_SHOWN]
        more = f" (the first {len(shown)})" if len(dead) > len(shown) else ""
        print(f"\nDead jobs{more}: each failed its last attempt, and janus.jobs keeps the error:")
        errors = outcome.recorded.last_errors
        print("\n".join(_columns([[f"  {job_id}", errors[job_id]] for job_id in shown], left=(0, 1))))
    ran_once = not report.duplicate_starts and not report.repeated_successes
    print(
        f"\n{load.republished} job ids were published a second time: "
        + ("Janus ignored the copies, no job ran twice." if ran_once else "some jobs ran twice.")
    )
    print("\nThe audit of what the workers saw (janus.audit):")
    print("\n".join(f"  {line}" for line in report.summary().splitlines()))

    problems = _problems(world, report)
    if outcome.problem is not None:
        problems.insert(0, outcome.problem)
    if problems:
        print("\nFAIL: " + "; ".join(problems))
        return 1
    print(
        "\nPASS: no rate or concurrency limit exceeded, no 429, every job finished exactly once "
        "(succeeded, or dead after its last attempt)."
    )
    return 0


def _print_dependencies(world: World, report: AuditReport, dead: dict[str, str]) -> None:
    jobs = Counter(s.dependency for s in world.load.submitted.values())
    dead_jobs = Counter(dead.values())
    rows = [
        ["dependency", "jobs", "done", "dead", "calls", "retries", "429s", "busiest window", "most in flight"]
    ]
    for policy in world.policies:
        name, api, seen = policy.name, world.apis[policy.name], report.dependencies[policy.name]
        rows.append(
            [
                name,
                str(jobs[name]),
                str(len(world.tally.succeeded[name])),
                str(dead_jobs[name]),
                str(api.calls + api.refused),
                str(world.tally.failures[name] - dead_jobs[name]),
                str(api.refused),
                ", ".join(f"{worst} of {limit}" for limit, worst in seen.worst_rate.items()) or "-",
                f"{seen.worst_concurrency} of {policy.concurrency or '-'}",
            ]
        )
    print("\n".join(_columns(rows, left=(0, 7))))


def _print_tenants(world: World, dead: dict[str, str]) -> None:
    """Fair share, seen as how long each tenant's jobs waited for their first admission."""
    submitted = world.load.submitted
    first_admitted: dict[str, float] = {}
    for record in world.tally.records:
        earliest = first_admitted.get(record.job_id, record.admitted_at)
        first_admitted[record.job_id] = min(record.admitted_at, earliest)
    waits: defaultdict[str, list[float]] = defaultdict(list)
    for job_id, submission in submitted.items():
        if job_id in first_admitted:
            waits[submission.scope].append(max(first_admitted[job_id] - submission.at, 0.0))
    jobs = Counter(s.scope for s in submitted.values())
    done = Counter(submitted[j].scope for j in world.tally.all_succeeded() if j in submitted)
    dead_jobs = Counter(submitted[j].scope for j in dead if j in submitted)
    rows = [["tenant", "jobs", "done", "dead", "median wait", "p95 wait", "max wait"]]
    for scope in (HEAVY_TENANT, *LIGHT_TENANTS):
        spread = waits[scope] or [0.0]
        rows.append(
            [
                scope,
                str(jobs[scope]),
                str(done[scope]),
                str(dead_jobs[scope]),
                f"{_percentile(spread, 0.5):.2f}s",
                f"{_percentile(spread, 0.95):.2f}s",
                f"{max(spread):.2f}s",
            ]
        )
    print(
        "\nWait from publication to first admission. Tenants take turns, so the light ones skip "
        f"{HEAVY_TENANT}'s\nbacklog; their longer waits are the seconds when a limit had no room "
        "left for anyone."
    )
    print("\n".join(_columns(rows)))


def _problems(world: World, report: AuditReport) -> list[str]:
    problems = []
    if report.lost:
        problems.append(f"{len(report.lost)} jobs never finished (e.g. {report.lost[0]})")
    if report.worst_rate_excess > 0:
        problems.append(f"a rate limit was exceeded by {report.worst_rate_excess}")
    if report.worst_concurrency_excess > 0:
        problems.append(f"a concurrency limit was exceeded by {report.worst_concurrency_excess}")
    if report.duplicate_starts:
        problems.append(f"{len(report.duplicate_starts)} admissions started more than once")
    # No lease can time out in the demo, so a second success can only be a duplicate run.
    if report.repeated_successes:
        problems.append(f"{len(report.repeated_successes)} jobs succeeded more than once")
    refused = sum(api.refused for api in world.apis.values())
    if refused:
        problems.append(f"the APIs answered 429 to {refused} calls")
    return problems
