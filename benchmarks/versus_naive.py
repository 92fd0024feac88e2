"""The PRD's failure modes side by side: a naive Celery stack and Janus, the same jobs, the same API.

One run, one fake API process (benchmarks/fake_api.py: at most LIMIT calls per second in any
sliding window, 429 beyond, and 503 to everything during an outage), and two stacks with the
same number of worker processes:

- naive: Celery over the same RabbitMQ (a vhost of its own), --workers worker nodes of
  --handlers prefork child processes each (Celery's default pool: with the threads pool a
  worker's rate limiter runs only about once a second), the API's limit as Celery's `rate_limit` (which each worker applies
  on its own: celery issue 5732), retries with `autoretry_for` and `retry_backoff`, FIFO;
- Janus: the same worker processes (the SDK `Worker`, --handlers handlers each) behind a real
  `janus run`, the limit in Janus's policy.

Scenarios, each on both stacks, measured where the API sees them:
1. rate: a backlog at once; the most calls in any 1 s window against the limit;
2. retry storm: steady traffic with a 10 s outage: calls during it and in the 10 s after,
   calls per job, and the time to drain after recovery;
3. starvation: a heavy tenant's 5,000 jobs, then a light tenant's 50: the light tenant's wait;
4. a rogue client publishing straight into the queue the workers read, and a worker reporting a
   forged success for someone else's job (Janus's side with least-privilege broker users);
5. predictability: Janus's measured calls over time against `janus simulate`'s prediction of
   the retry-storm workload.

    .venv/bin/python -m benchmarks.versus_naive [--workers 4] [--handlers 4] [--limit 20]
        [--write-docs] [--plot docs/img/versus_naive.png]

Needs the `[bench]` extra (Celery, matplotlib). Leaves nothing behind: every process it starts
is killed, its vhosts, database and broker users are deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import fake_api
from janus.local_services import LocalServices

ROOT = Path(__file__).resolve().parents[1]
LOCAL = LocalServices()
QUEUE = "versus"
BROKER_ENV, PORT_ENV, LIMIT_ENV = "VERSUS_CELERY_BROKER", "VERSUS_API_PORT", "VERSUS_RATE_LIMIT"
API_LATENCY = 0.02  # seconds an accepted call takes
OUTAGE = (10.0, 20.0)  # seconds after the retry-storm scenario starts
STORM_RATE, STORM_FOR = 10.0, 30.0  # jobs per second, seconds of traffic
HEAVY, LIGHT = 5000, 50
DOCS = ROOT / "docs" / "benchmarks.md"


# -- the naive stack's Celery app (imported by `celery -A benchmarks.versus_naive worker`) --------


def make_celery_app(broker: str, port: int, limit: int) -> Any:
    from celery import Celery

    celery = Celery("versus", broker=broker)
    celery.conf.update(
        task_default_queue=QUEUE,
        task_ignore_result=True,
        worker_prefetch_multiplier=4,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    # What a team writes first: the API's limit as rate_limit, retries with exponential backoff.
    @celery.task(
        name="versus.call_api",
        rate_limit=f"{limit}/s",
        autoretry_for=(fake_api.ApiError,),
        retry_backoff=1,
        retry_backoff_max=30,
        retry_jitter=True,
        max_retries=10,
    )
    def call_api(job: str, tenant: str) -> None:
        fake_api.call(port, job, tenant)

    return celery


app = (
    make_celery_app(os.environ[BROKER_ENV], int(os.environ[PORT_ENV]), int(os.environ[LIMIT_ENV]))
    if BROKER_ENV in os.environ
    else None
)


# -- processes -----------------------------------------------------------------------------


class Children:
    """Every process this run starts, each in a session of its own, so that all die at the end."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, args: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as err:
            process = subprocess.Popen(
                list(args),
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                cwd=ROOT,
            )
        self.processes.append(process)
        return process

    def stop(self, processes: Sequence[subprocess.Popen[bytes]] | None = None, timeout: float = 10.0) -> None:
        targets = list(self.processes if processes is None else processes)
        for process in targets:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in targets:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            if process in self.processes:
                self.processes.remove(process)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


async def wait_for_text(log: Path, text: str, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while text not in await asyncio.to_thread(log.read_text, errors="replace"):
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited: {_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.args}: no {text!r} within {timeout:g}s: {_tail(log)}")
        await asyncio.sleep(0.1)


# -- the two stacks ------------------------------------------------------------------------


@dataclass(kw_only=True)
class Options:
    workers: int
    handlers: int
    limit: int
    port: int
    tag: str
    workdir: Path


class Stack:
    name: str

    def __init__(self, options: Options, children: Children, scenario: str) -> None:
        self.options = options
        self.children = children
        self.scenario = scenario
        self.vhost = f"versus-{self.name}-{options.tag}-{scenario}"
        self.processes: list[subprocess.Popen[bytes]] = []

    def log(self, what: str) -> Path:
        return self.options.workdir / f"{self.name}-{self.scenario}-{what}.log"

    async def start(self) -> None:
        raise NotImplementedError

    async def submit(self, jobs: Sequence[tuple[str, str]]) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        self.children.stop(self.processes)
        self.processes.clear()
        with contextlib.suppress(Exception):
            await LOCAL.delete_vhost(self.vhost)


class Naive(Stack):
    name = "naive"

    async def start(self) -> None:
        await LOCAL.create_vhost(self.vhost)
        self.broker = LOCAL.amqp_url(self.vhost)
        env = {BROKER_ENV: self.broker, PORT_ENV: str(self.options.port), LIMIT_ENV: str(self.options.limit)}
        for index in range(self.options.workers):
            log = self.log(f"worker{index}")
            process = self.children.start(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "benchmarks.versus_naive",
                    "worker",
                    "--pool",
                    "prefork",
                    "--concurrency",
                    str(self.options.handlers),
                    "-n",
                    f"w{index}.{self.options.tag}@%h",
                    "-Q",
                    QUEUE,
                    "--loglevel",
                    "INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                env,
                log,
            )
            self.processes.append(process)
        for index, process in enumerate(self.processes):
            await wait_for_text(self.log(f"worker{index}"), " ready.", 60, process)
        self.producer = make_celery_app(self.broker, self.options.port, self.options.limit)

    async def submit(self, jobs: Sequence[tuple[str, str]]) -> None:
        def send() -> None:
            with self.producer.producer_or_acquire() as producer:
                for job, tenant in jobs:
                    self.producer.send_task(
                        "versus.call_api", args=[job, tenant], queue=QUEUE, producer=producer
                    )

        await asyncio.to_thread(send)


class Janus(Stack):
    name = "janus"

    async def start(self) -> None:
        from janus.client import Producer

        await LOCAL.create_vhost(self.vhost)
        self.database = f"versus_{self.options.tag}_{self.scenario}"
        await LOCAL.create_database(self.database)
        self.amqp = LOCAL.amqp_url(self.vhost)
        self.config = self.options.workdir / f"janus-{self.scenario}.toml"
        self.config.write_text(janus_policy(self.options.limit, LOCAL.pg_url(self.database), self.amqp))
        log = self.log("janus")
        janus = self.children.start(
            [sys.executable, "-m", "janus.cli", "run", "--config", str(self.config)],
            {"JANUS_HTTP_PORT": "0", "JANUS_LOG_LEVEL": "INFO"},
            log,
        )
        self.processes.append(janus)
        await wait_for_text(log, "admitting as", 60, janus)
        for index in range(self.options.workers):
            log = self.log(f"worker{index}")
            process = self.children.start(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.versus_naive",
                    "janus-worker",
                    "--amqp",
                    self.amqp,
                    "--port",
                    str(self.options.port),
                    "--handlers",
                    str(self.options.handlers),
                ],
                {},
                log,
            )
            self.processes.append(process)
            await wait_for_text(log, "worker ready", 60, process)
        self.producer = await Producer.connect(self.amqp, name="versus-producer")

    async def submit(self, jobs: Sequence[tuple[str, str]]) -> None:
        await self.producer.submit_many((job, "api", None, tenant) for job, tenant in jobs)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.producer.close()
        await super().stop()
        with contextlib.suppress(Exception):
            await LOCAL.drop_database(self.database)


def janus_policy(limit: int, database_url: str, amqp_url: str) -> str:
    """The API's limit in Janus's policy. A limit counts starts at the workers over windows of
    T (protocol.md); the API counts arrivals, a loopback hop later, so the window gets 5 % of
    margin."""
    window = "1.05s"
    return f"""\
# Written by benchmarks/versus_naive.py.
database_url = "{database_url}"
amqp_url = "{amqp_url}"

[dependencies.api]
rate_limits = ["{limit}/{window}"]
admission_ttl = "100ms"
lease_timeout = "30s"

[dependencies.api.retry]
max_attempts = 10
base_delay = "1s"
max_delay = "30s"

[dependencies.api.circuit]
min_outcomes = 10
window = "10s"
open_for = "2s"
max_open_for = "10s"
"""


async def janus_worker(amqp: str, port: int, handlers: int) -> None:
    """One worker process of the Janus stack: the SDK worker calling the fake API."""
    from janus.client import ReadyJob, RetryAfter, Worker

    async def handle(job: ReadyJob) -> None:
        try:
            await asyncio.to_thread(fake_api.call, port, job.job_id, job.scope)
        except fake_api.ApiError as exc:
            if exc.status == 429 and exc.retry_after is not None:
                raise RetryAfter(exc.retry_after) from None
            raise

    worker = Worker(amqp, {"api": handle}, prefetch=handlers, max_in_flight=handlers)
    await worker.start()
    print("worker ready", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await worker.stop()


# -- measuring at the API ------------------------------------------------------------------


Call = tuple[float, str, str, int]  # (t, job, tenant, status)


def api_calls(port: int, since: float) -> list[Call]:
    _, _, calls = fake_api.request(port, "GET", "/calls")
    return [(t - since, job, tenant, status) for t, job, tenant, status in calls]


def peak_in_window(times: Sequence[float], window: float = 1.0) -> int:
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + window) - i for i, t in enumerate(ordered)), default=0)


def done_at(calls: Sequence[Call]) -> dict[str, float]:
    """Each job's first accepted call."""
    first: dict[str, float] = {}
    for t, job, _, status in calls:
        if status == 200 and job not in first:
            first[job] = t
    return first


async def until_done(port: int, since: float, jobs: Sequence[str], deadline: float) -> list[Call]:
    """The API's calls once every job had an accepted call, or at the deadline."""
    wanted = set(jobs)
    while True:
        calls = await asyncio.to_thread(api_calls, port, since)
        if wanted <= done_at(calls).keys() or time.time() - since > deadline:
            return calls
        await asyncio.sleep(0.5)


@dataclass(kw_only=True)
class Result:
    figures: dict[str, float | str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)


# -- the scenarios -------------------------------------------------------------------------


def names(prefix: str, count: int, tenant: str) -> list[tuple[str, str]]:
    return [(f"{prefix}-{n}", tenant) for n in range(count)]


async def rate(stack: Stack, options: Options) -> Result:
    jobs = names("rate", 15 * options.limit, "t")
    start = time.time()
    await stack.submit(jobs)
    calls = await until_done(options.port, start, [j for j, _ in jobs], deadline=90)
    finished = done_at(calls)
    return Result(
        figures={
            "peak calls in 1 s": peak_in_window([t for t, *_ in calls]),
            "429 answers": sum(1 for *_, status in calls if status == 429),
            "calls per job": len(calls) / len(jobs),
            "all done after (s)": max(finished.values()) if len(finished) == len(jobs) else "not all",
        },
        calls=calls,
    )


async def storm(stack: Stack, options: Options) -> Result:
    jobs = names("storm", int(STORM_RATE * STORM_FOR), "t")
    start = time.time()
    fake_api.request(options.port, "POST", "/outage", {"start": start + OUTAGE[0], "end": start + OUTAGE[1]})
    per_tick = int(STORM_RATE / 2)
    for index in range(0, len(jobs), per_tick):
        await asyncio.sleep(max(0.0, start + index / STORM_RATE - time.time()))
        await stack.submit(jobs[index : index + per_tick])
    calls = await until_done(options.port, start, [j for j, _ in jobs], deadline=120)
    finished = done_at(calls)
    outage = [t for t, *_ in calls if OUTAGE[0] <= t < OUTAGE[1]]
    after = [t for t, *_ in calls if OUTAGE[1] <= t < OUTAGE[1] + 10]
    return Result(
        figures={
            "calls during the outage": len(outage),
            "calls in the 10 s after": len(after),
            "429 answers": sum(1 for *_, status in calls if status == 429),
            "calls per job": len(calls) / len(jobs),
            "drained after recovery (s)": max(finished.values()) - OUTAGE[1]
            if len(finished) == len(jobs)
            else "not all",
            "jobs never done": len(jobs) - len(finished),
        },
        calls=calls,
    )


async def starvation(stack: Stack, options: Options) -> Result:
    heavy, light = names("heavy", HEAVY, "heavy"), names("light", LIGHT, "light")
    start = time.time()
    await stack.submit(heavy)
    light_at = time.time() - start
    await stack.submit(light)
    calls = await until_done(options.port, start, [j for j, _ in light], deadline=light_at + 60)
    finished = done_at(calls)
    waits = sorted(finished[j] - light_at for j, _ in light if j in finished)
    return Result(
        figures={
            "light jobs done within 60 s": len(waits),
            "light wait p50 (s)": statistics.median(waits) if waits else "> 60",
            "light wait max (s)": max(waits) if len(waits) == LIGHT else "> 60",
        },
        calls=calls,
    )


async def rogue(stack: Stack, options: Options) -> Result:
    jobs = names("legit", 100, "t")
    start = time.time()
    rogue_jobs = names("rogue", 100, "rogue")
    if isinstance(stack, Janus):
        await stack.submit(jobs)
        # Reports for jobs still waiting (the limit admits 20 a second): not this worker's admissions.
        forged = await janus_forged_successes(stack, jobs[50:])
        refused = await janus_rogue_publish(stack, options, rogue_jobs)
    else:
        # Nothing stands between a client that can reach the queue and the workers.
        await stack.submit(jobs)
        await stack.submit(rogue_jobs)
        refused, forged = "accepted", "nothing checks results"
    expected = [j for j, _ in jobs] + ([] if isinstance(stack, Janus) else [j for j, _ in rogue_jobs])
    calls = await until_done(options.port, start, expected, deadline=90)
    await asyncio.sleep(2.0)  # anything that would still reach the API
    calls = await asyncio.to_thread(api_calls, options.port, start)
    per_job = Counter(job for _, job, _, status in calls if status == 200)
    return Result(
        figures={
            "rogue publish into the workers' queue": refused,
            "rogue jobs the API ran": sum(1 for j, _ in rogue_jobs if j in per_job),
            "forged successes": forged,
            "legit jobs the API ran once": sum(1 for j, _ in jobs if per_job[j] == 1),
        },
        calls=calls,
    )


async def janus_rogue_publish(stack: Janus, options: Options, jobs: Sequence[tuple[str, str]]) -> str:
    """A client with the least-privilege producer role tries to publish admissions itself."""
    import aio_pika
    from aiormq.exceptions import ChannelAccessRefused

    from janus.broker import topology
    from janus.broker.definitions import PERMISSIONS

    user, password = f"versus-{options.tag}-producer", uuid.uuid4().hex
    await LOCAL.ctl("add_user", user, password)
    try:
        await LOCAL.ctl("set_permissions", "-p", stack.vhost, user, *PERMISSIONS["producer"])
        url = stack.amqp.replace("guest:guest@", f"{user}:{password}@")
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            body = json.dumps(
                {"job_id": jobs[0][0], "dependency": "api", "scope": "rogue", "attempt": 1}
            ).encode()
            try:
                await channel.default_exchange.publish(
                    aio_pika.Message(body), routing_key=topology.ready_queue("api")
                )
            except ChannelAccessRefused:
                return "refused by the broker (403)"
            return "accepted"
    finally:
        await LOCAL.ctl("delete_user", user, check=False)


async def janus_forged_successes(stack: Janus, jobs: Sequence[tuple[str, str]]) -> str:
    """A worker of the dependency reports success for jobs that are not its own admissions:
    Janus sets them aside (the jobs are then admitted and run as usual)."""
    import aio_pika

    from janus.broker import topology
    from janus.protocol import CONTENT_TYPE, encode_result

    connection = await aio_pika.connect(stack.amqp)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.RESULTS_EXCHANGE)
        for job, _ in jobs:
            body = encode_result(job_id=job, attempt=1, outcome="success", error=None, retry_after=None)
            await exchange.publish(aio_pika.Message(body, content_type=CONTENT_TYPE), routing_key="api")
    return f"{len(jobs)} set aside, changed nothing"


SCENARIOS: dict[str, Callable[[Stack, Options], Awaitable[Result]]] = {
    "rate": rate,
    "storm": storm,
    "starvation": starvation,
    "rogue": rogue,
}


# -- predictability: janus simulate on the retry-storm workload ----------------------------


def predicted_storm(options: Options, policy_path: Path) -> list[float]:
    """`janus simulate`'s calls to the API (starts) for the retry-storm workload."""
    from janus.config import load_config
    from janus.simulate import parse_workload, simulate

    policies = load_config(policy_path, env={}).policies()
    workload = parse_workload(
        {
            "arrivals": [{"dependency": "api", "scope": "t", "rate": STORM_RATE, "stop": f"{STORM_FOR}s"}],
            "services": {
                "api": {
                    "duration": f"{API_LATENCY}s",
                    "error_duration": "2ms",
                    "outages": [{"start": f"{OUTAGE[0]}s", "end": f"{OUTAGE[1]}s"}],
                    "capacity": f"{options.limit}/1s",
                    "throttle_retry_after": "1s",
                }
            },
            "workers": {"api": {"slots": options.workers * options.handlers, "start_delay": "10ms"}},
        },
        [p.name for p in policies],
    )
    outcome = simulate(policies, workload, seed=1)
    return sorted(outcome.dependencies["api"].started)


# -- the report ----------------------------------------------------------------------------


def fmt(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:.2f}"


def ratio(naive: float | str, janus: float | str) -> str:
    if isinstance(naive, str) or isinstance(janus, str) or janus == 0:
        return "–"
    return f"{naive / janus:.1f}×"


def table(results: dict[str, dict[str, Result]]) -> list[str]:
    lines = ["| scenario | measure | naive Celery | Janus | naive / Janus |", "|---|---|---|---|---|"]
    empty = Result()
    for scenario, stacks in results.items():
        measures = {**stacks.get("naive", empty).figures, **stacks.get("janus", empty).figures}
        for measure in measures:
            naive = stacks.get("naive", empty).figures.get(measure, "–")
            janus = stacks.get("janus", empty).figures.get(measure, "–")
            lines.append(f"| {scenario} | {measure} | {fmt(naive)} | {fmt(janus)} | {ratio(naive, janus)} |")
    return lines


def compare(predicted: Sequence[float], measured: Sequence[float]) -> str:
    """The two runs' calls in all, and the most by which their running totals ever differ."""
    end = max(*predicted, *measured)
    worst, when = 0, 0.0
    for step in range(int(end * 10) + 2):
        t = step / 10
        gap = abs(bisect.bisect_right(predicted, t) - bisect.bisect_right(measured, t))
        if gap > worst:
            worst, when = gap, t
    return f"{len(predicted)} predicted, {len(measured)} made; running totals at most {worst} apart (at {when:.1f}s)"


def per_second(times: Sequence[float], end: float) -> tuple[list[float], list[int]]:
    seconds = int(end) + 1
    counts = [0] * seconds
    for t in times:
        if 0 <= t < seconds:
            counts[int(t)] += 1
    return [k + 0.5 for k in range(seconds)], counts


def plot(results: dict[str, dict[str, Result]], predicted: list[float], options: Options, path: Path) -> None:
    from janus.simulate.plot import require_matplotlib

    plt = require_matplotlib()
    figure, axes = plt.subplots(2, 2, figsize=(13, 8))
    colours = {"naive": "tab:red", "janus": "tab:blue"}
    label = {
        "naive": f"naive Celery ({options.workers} workers, rate_limit {options.limit}/s each)",
        "janus": "Janus",
    }
    for axis, scenario, title in (
        (axes[0][0], "rate", f"1. A backlog at once: API calls per second (limit {options.limit}/s)"),
        (axes[0][1], "storm", "2. A 10 s outage in steady traffic: API calls per second"),
    ):
        end = max(t for stack in results[scenario].values() for t, *_ in stack.calls)
        for name, result in results[scenario].items():
            xs, ys = per_second([t for t, *_ in result.calls], end)
            axis.step(xs, ys, where="mid", color=colours[name], label=label[name])
        axis.axhline(options.limit, linestyle="--", color="black", linewidth=1, label="the API's limit")
        if scenario == "storm":
            axis.axvspan(*OUTAGE, color="grey", alpha=0.2, label="outage")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("seconds")
        axis.legend(fontsize=8)
    axis = axes[1][0]
    for name, result in results["starvation"].items():
        light = sorted(t for t, job, tenant, status in result.calls if tenant == "light" and status == 200)
        start = min((t for t, _, tenant, _ in result.calls if tenant == "light"), default=0.0)
        axis.step(
            [0.0, *[t - start for t in light]],
            range(len(light) + 1),
            where="post",
            color=colours[name],
            label=label[name],
        )
    axis.set_title(
        f"3. A light tenant's {LIGHT} jobs behind a heavy tenant's {HEAVY:,}: done over time", fontsize=10
    )
    axis.set_xlabel("seconds after the light tenant published")
    axis.set_ylabel("light jobs done")
    axis.set_xlim(0, 60)
    axis.legend(fontsize=8)
    axis = axes[1][1]
    measured = results["storm"]["janus"].calls
    end = max(t for t, *_ in measured)
    xs, ys = per_second([t for t, *_ in measured], end)
    axis.step(xs, ys, where="mid", color="tab:blue", label="Janus, measured")
    xs, ys = per_second(predicted, end)
    axis.step(xs, ys, where="mid", color="tab:orange", linestyle="--", label="janus simulate, predicted")
    axis.axvspan(*OUTAGE, color="grey", alpha=0.2, label="outage")
    axis.set_title("5. The outage scenario: Janus measured against its simulation", fontsize=10)
    axis.set_xlabel("seconds")
    axis.set_ylabel("API calls per second")
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


FIGURES_BEGIN, FIGURES_END = "<!-- versus_naive: figures -->", "<!-- versus_naive: end of figures -->"


def write_docs(lines: list[str], load: tuple[float, float]) -> None:
    """Replace the figures in the benchmark's section of docs/benchmarks.md (the prose around
    them is written by hand, from what the figures show)."""
    text = DOCS.read_text(encoding="utf-8")
    today = datetime.date.today().isoformat()
    figures = "\n".join(
        [
            FIGURES_BEGIN,
            f"Latest figures, {today}, load average {load[0]:.1f} at the start and {load[1]:.1f} at the end:",
            "",
            *lines,
            "",
            "![the naive stack and Janus, per scenario](img/versus_naive.png)",
            FIGURES_END,
        ]
    )
    pattern = re.compile(re.escape(FIGURES_BEGIN) + r".*?" + re.escape(FIGURES_END), re.S)
    if not pattern.search(text):
        raise RuntimeError(f"{DOCS} has no {FIGURES_BEGIN} ... {FIGURES_END} block to replace")
    DOCS.write_text(pattern.sub(lambda _: figures, text), encoding="utf-8")


# -- the run -------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    try:
        import celery  # noqa: F401
        import matplotlib  # noqa: F401
    except ImportError:
        print("versus_naive needs the [bench] extra: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    tag, workdir = args.tag, Path(args.workdir)
    load_start = os.getloadavg()[0]
    print(f"load average at the start: {load_start:.2f}; logs in {workdir}", flush=True)
    children = Children()
    api = children.start(
        [
            sys.executable,
            "-m",
            "benchmarks.fake_api",
            "--limit",
            f"{args.limit}/1",
            "--latency",
            str(API_LATENCY),
            "--nice",
            "-5",
        ],
        {},
        workdir / "fake-api.log",
    )
    results: dict[str, dict[str, Result]] = {}
    predicted: list[float] = []
    try:
        assert api.stdout is not None
        port = json.loads(await asyncio.to_thread(api.stdout.readline))["port"]
        options = Options(
            workers=args.workers,
            handlers=args.handlers,
            limit=args.limit,
            port=port,
            tag=tag,
            workdir=workdir,
        )
        for scenario in args.scenarios:
            results[scenario] = {}
            for stack_type in [stack for stack in (Naive, Janus) if stack.name in args.stacks]:
                fake_api.request(port, "POST", "/reset")
                stack = stack_type(options, children, scenario)
                try:
                    await stack.start()
                    began = time.monotonic()
                    result = await SCENARIOS[scenario](stack, options)
                    if scenario == "storm" and isinstance(stack, Janus):
                        predicted = predicted_storm(options, stack.config)
                finally:
                    await stack.stop()
                results[scenario][stack.name] = result
                (workdir / f"calls-{scenario}-{stack.name}.json").write_text(json.dumps(result.calls))
                shown = ", ".join(f"{k} {fmt(v)}" for k, v in result.figures.items())
                print(
                    f"{scenario:<11} {stack.name:<6} ({time.monotonic() - began:.0f}s): {shown}", flush=True
                )
        if "janus" in results.get("storm", {}) and predicted:
            measured = sorted(t for t, *_ in results["storm"]["janus"].calls)
            results["predictability"] = {
                "naive": Result(figures={"API calls, janus simulate's prediction against the run": "–"}),
                "janus": Result(
                    figures={
                        "API calls, janus simulate's prediction against the run": compare(predicted, measured)
                    }
                ),
            }
    finally:
        children.stop()
    load_end = os.getloadavg()[0]
    lines = table(results)
    print("\n".join(lines))
    print(f"load average at the end: {load_end:.2f}")
    if args.plot and {"rate", "storm", "starvation"} <= results.keys():
        plot(results, predicted, options, Path(args.plot))
        print(f"plot: {args.plot}")
    if args.write_docs:
        write_docs(lines, (load_start, load_end))
        print(f"written to {DOCS}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the naive stack's failure modes against Janus")
    commands = parser.add_subparsers(dest="command")
    worker = commands.add_parser("janus-worker", help="(internal) one worker process of the Janus stack")
    worker.add_argument("--amqp", required=True)
    worker.add_argument("--port", type=int, required=True)
    worker.add_argument("--handlers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4, help="worker processes per stack")
    parser.add_argument("--handlers", type=int, default=4, help="calls in flight per worker process")
    parser.add_argument("--limit", type=int, default=20, help="the API's calls per second")
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--stacks", nargs="*", default=["naive", "janus"], choices=["naive", "janus"])
    parser.add_argument("--plot", help="write the plots to this PNG")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    parser.add_argument("--workdir", help="where the processes' logs go (default: a new /tmp directory)")
    args = parser.parse_args(argv)
    if args.command == "janus-worker":
        asyncio.run(janus_worker(args.amqp, args.port, args.handlers))
        return 0
    args.tag = uuid.uuid4().hex[:6]
    args.workdir = args.workdir or f"/tmp/versus-{args.tag}"
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
