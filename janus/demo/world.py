"""The demo's simulated world: the APIs Janus protects, the tenants' load, and what the workers
and the store saw, with the live progress lines."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field

from pydantic import JsonValue

from janus.audit import start_window
from janus.client import Producer, ReadyJob, RetryAfter, WorkRecord
from janus.core.policy import DependencyPolicy
from janus.service.app import Service
from janus.store.repository import Store


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
# For dependencies someone adds to the demo's policy (policy.toml).
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


async def produce(producer: Producer, load: Load) -> None:
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


async def read_recorded(store: Store) -> Recorded:
    dead = await store.dead_jobs()
    return Recorded(
        dead={job.job_id: job.dependency for job in dead},
        last_errors={job.job_id: job.last_error or "" for job in dead},
        finished=await store.finished_count(),
    )


def _gauge(service: Service, name: str, labels: dict[str, str]) -> int:
    value = service.metrics.registry.get_sample_value(name, labels)
    return int(value) if value is not None else 0


def columns(rows: Sequence[Sequence[str]], *, left: Collection[int] = (0,)) -> list[str]:
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
        finished = self.finished(dead)
        header = (
            f"[{elapsed:3.0f}s] {phase}: submitted {len(load.submitted)}, re-sent {load.republished}, "
            f"finished {finished}, left {len(load.submitted) - finished}"
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
        for policy, row in zip(self.policies, rows, strict=True):
            cells = [row[0].ljust(self._widths[0])]
            for label, value, width in zip(labels[1:], row[1:], self._widths[1:], strict=True):
                cells.append(f"{label} {value.rjust(width)}" if label else value.rjust(width))
            lines.append("  " + "  ".join(cells) + self.held_by(policy.name, now))
        return "\n".join(lines)

    def held_by(self, dependency: str, now: float) -> str:
        """What holds the dependency's waiting jobs back now, as `janus scopes` says it: so that a
        quiet stretch (a circuit open, retries over their budget) shows what it waits for."""
        scheduler = self.service.inspector.scheduler
        if scheduler is None:
            return ""
        reasons = [
            reason.detail
            + (f" ({max(0.0, reason.until - now):.1f} s left)" if reason.until is not None else "")
            for reason in scheduler.lane_blocks(dependency, now)
            if reason.reason.value not in ("rate", "concurrency")  # the columns show those
        ]
        return f"  held: {'; '.join(reasons)}" if reasons else ""


@dataclass(kw_only=True)
class Outcome:
    elapsed: float
    recorded: Recorded
    problem: str | None = None  # why not every job finished
