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
import contextlib
import logging
import os
import random
import sys
import uuid
from importlib import resources

from janus.client import Producer, Worker
from janus.config import JanusConfig, load_config
from janus.demo.report import print_intro, print_summary
from janus.demo.world import (
    DEFAULT_PROFILE,
    PROFILES,
    Load,
    Outcome,
    SimulatedApi,
    Tally,
    World,
    produce,
    read_recorded,
)
from janus.errors import JanusError
from janus.local_services import LocalServices, check_database_name
from janus.service.app import Service
from janus.service.options import ServiceOptions
from janus.store.repository import Store

# The policy the demo runs with: package data, so that an installed Janus has it too.
DEMO_POLICY = resources.files("janus.demo").joinpath("policy.toml")
VHOST_PREFIX = "janus-demo-"  # + a tag of the run: two demos on one broker do not meet
# The comment of every database the demo creates: it recreates (drops) only databases with it.
DEMO_MARKER = "created by janus demo"
LOCAL = LocalServices()
START_TIMEOUT = 30.0
DRAIN_TIMEOUT = 120.0  # after production ends, how long the last jobs may take
STOP_TIMEOUT = 30.0
WORKERS = 2  # competing consumers: the budgets hold across workers, not per worker


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


async def _watch(
    world: World, service_task: asyncio.Task[None], production: asyncio.Task[None], store: Store
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
        recorded = await read_recorded(store)
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
    store: Store | None = None
    outcome: Outcome | None = None
    try:
        await _until_leading(service, service_task)
        store = await Store.connect(config.database_url, application_name="janus-demo")
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
            production = asyncio.create_task(produce(producer, world.load), name="producer")
            try:
                outcome = await _watch(world, service_task, production, store)
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
        if store is not None:
            await store.close()
    if outcome is not None and janus_error is not None:
        outcome.problem = f"Janus failed: {_describe(janus_error)}"
    return outcome


async def refuse_database(local: LocalServices, database: str) -> str | None:
    """Why the demo must not (re)create `database` (None if it may): the demo drops the database
    it runs on, so only one it created itself (its marker), and that nothing is connected to."""
    exists, marker = await local.database_marker(database)
    if not exists:
        return None
    if marker != DEMO_MARKER:
        # Whatever made it, it is not the demo's to drop, connections or not.
        return (
            f"the database {database} exists and janus demo did not create it: it is left alone; "
            "choose another with --database NAME"
        )
    in_use = await local.connections_to(database)
    if in_use:
        # Recreating it would cut another demo (or anything else) off its database mid-run.
        return (
            f"the database {database} has {in_use} open connection(s), another demo's "
            "perhaps: stop it, or choose another with --database NAME"
        )
    return None


async def run_demo(*, duration: float, database: str) -> int:
    if "JANUS_LOG_LEVEL" not in os.environ:
        # The service's routine INFO lines would break up the progress display.
        logging.getLogger("janus").setLevel(logging.WARNING)
    check_database_name(database)
    refusal = await refuse_database(LOCAL, database)
    if refusal is not None:
        print(f"janus demo: {refusal}", file=sys.stderr)
        return 2
    vhost = f"{VHOST_PREFIX}{uuid.uuid4().hex[:8]}"
    with resources.as_file(DEMO_POLICY) as policy_file:
        policy = load_config(policy_file)
    config = policy.model_copy(
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
    print_intro(world, config, DEMO_POLICY)
    try:
        await LOCAL.create_database(database, replace=True, marker=DEMO_MARKER)
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
    code = print_summary(world, outcome)
    print(
        f"\nThe vhost {vhost} is deleted; the jobs stay in PostgreSQL:\n"
        f"  psql {config.database_url} -c "
        "'SELECT dependency, state, count(*) FROM janus.jobs GROUP BY 1, 2 ORDER BY 1, 2'"
    )
    return code
