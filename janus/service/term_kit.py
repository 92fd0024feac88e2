"""What a term does in either mode (single leader: leader_mode.py; member: member_mode.py):
connect, rebuild the core from PostgreSQL, tell it the workers, and set up the outbox, the
consumers and the admission loop. It also keeps the state that outlives one term (the clock's
offset, the workers last counted, the backoff's exponent), which both modes read and reset.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import TYPE_CHECKING

from janus.broker import connection as broker
from janus.broker import topology
from janus.broker.consumer import Consuming, OnDelivery, consume
from janus.broker.publisher import Publisher
from janus.core.outbox import OutboxMessage
from janus.core.rebuild import history_since
from janus.core.scheduler import Scheduler
from janus.errors import BrokerError, LeadershipLost, StoreError
from janus.service.admission_loop import AdmissionLoop
from janus.service.broker_version import warn_unchecked_cc
from janus.service.health import Role
from janus.service.inbox import Inbox
from janus.service.leadership import Term
from janus.service.outbox import OutboxRelay
from janus.service.retention import Pruner
from janus.service.steer import Running, steering_of
from janus.service.tick import TickOptions
from janus.store.repository import Store
from janus.store.session import LeaderSession

if TYPE_CHECKING:
    from janus.service.app import Service

log = logging.getLogger("janus.service")

PREFETCH = 2000  # unacked deliveries per consumer channel: bounds the inbox
# Per results queue (one per dependency): bounds what one flooding worker can pile up in memory.
RESULTS_PREFETCH = 1000
# ...and in bytes: RabbitMQ does not implement basic.qos's prefetch_size, so a channel's unacked
# deliveries are bounded by count x max_message_size (which the broker enforces) instead.
PREFETCH_BYTES = 32 * 1024 * 1024


def prefetch(count: int, max_message_size: int) -> int:
    """Unacked deliveries of one consumer channel: at most `count`, and at most PREFETCH_BYTES
    of messages of the largest size the broker takes."""
    return max(1, min(count, PREFETCH_BYTES // max_message_size))


# Errors that mean "the broker or the database is gone or refuses": the process recovers.
# The adapters (store/, broker/) raise nothing else for a lost or refusing service.
RECOVERABLE: tuple[type[Exception], ...] = (StoreError, BrokerError)

# A consumer to start: its queue, its prefetch and what it does with each delivery.
ConsumerSpec = tuple[str, int, OnDelivery]


class Phases:
    """Seconds spent in each step of building a term, for one log line: where a move's pause goes."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._mark = self.started
        self.spent: dict[str, float] = {}
        self.alongside: dict[str, float] = {}  # steps run at the same time as the laps (not added)

    def lap(self, step: str) -> None:
        """`step` took the time since the previous lap."""
        now = time.monotonic()
        self.spent[step] = self.spent.get(step, 0.0) + now - self._mark
        self._mark = now

    def summary(self) -> str:
        steps = ", ".join(f"{step} {seconds:.3f}" for step, seconds in self.spent.items())
        beside = "".join(f"; alongside: {step} {seconds:.3f}" for step, seconds in self.alongside.items())
        return f"{self._mark - self.started:.3f} s ({steps}{beside})"


def leaves_of(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves_of(inner)]
    return [exc]


def cause_of(exc: BaseException) -> str:
    """What ended a term, for the metrics and the logs."""
    leaves = leaves_of(exc)
    if any(isinstance(leaf, asyncio.CancelledError) for leaf in leaves):
        return "cancelled"
    if any(isinstance(leaf, LeadershipLost) for leaf in leaves):
        return "lease_lost"
    if any(isinstance(leaf, StoreError) for leaf in leaves):
        return "database"
    if any(isinstance(leaf, RECOVERABLE) for leaf in leaves):
        return "broker"
    return "bug"


class TermKit:
    """One per process: the Service owns it, each mode's terms use it."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.store: Store | None = None  # the connection to the database in use, for who_leads
        self.clock_offset = 0.0  # the database's clock minus this host's, as the last term measured
        self.failures = 0  # consecutive failed attempts to get going: the backoff's exponent
        self.worker_counts: dict[str, int] = {}  # consumers per ready queue, as last counted
        self.steering_seen = 0  # the highest steering row the last rebuild applied
        self._told_broker_version = False

    async def connect_store(self) -> Store:
        service = self.service
        self.store = await Store.connect(
            service.config.database_url,
            application_name=f"janus-{service.identity}",
            timeout=service.options.db_timeout,
        )
        return self.store

    async def connect_broker(self, purpose: str = "term") -> broker.Connection:
        # Refused credentials or vhost raise ConnectionSettingsError, which is not recoverable.
        service = self.service
        return await broker.connect(
            service.config.amqp_url,
            name=f"janus-{service.identity}-{purpose}",
            timeout=service.options.db_timeout,
            heartbeat=service.options.amqp_heartbeat,
        )

    async def sync_clock(self, store: Store) -> None:
        """Windows are kept on the database's clock: measure its offset from this host's."""
        sent = time.time()
        database_now = await store.database_time()
        self.clock_offset = database_now - (sent + time.time()) / 2

    def polled(self, reached: bool) -> None:
        # The backoff is reset only once a term admits: a standby that reaches the database
        # may still fail to lead (no broker), and must not retry that at full speed.
        self.service.health.polled(reached)
        if reached:
            self.service.metrics.recovering.set(0)

    def policy_metrics(self) -> None:
        running = self.service.running
        if running is not None:
            self.service.metrics.policy_version.set(running.version)
            self.service.metrics.policy_file_differs.set(1 if running.file_differs else 0)

    async def rebuild(
        self, store: Store, only: Collection[str] | None = None, phases: Phases | None = None
    ) -> Scheduler:
        """Every budget from PostgreSQL, before the first admission of the term (and after a new
        version of the policy): the version of record, with the operators' pauses and overrides.
        `only`: member mode's dependencies, configured or removed (the others are other members')."""
        running = self.service.running
        clock = self.service.clock
        if running is None:
            raise RuntimeError("the policy of record is read before the core is rebuilt")
        policies = [p for p in running.policies() if only is None or p.name in only]
        removed = [p for p in running.removed if only is None or p.name in only]
        steering_seen, rows = await store.policy_log.steering_in_force()
        steering = steering_of(rows)
        admissions_since, budget_since = history_since([*policies, *removed], clock(), steering)
        snapshot = await store.snapshot(
            admissions_since=admissions_since, budget_since=budget_since, only=only
        )
        snapshot = dataclasses.replace(snapshot, steering=steering)
        if phases is not None:
            phases.lap("snapshot read")
        scheduler = Scheduler.rebuilt(policies, snapshot, clock(), random.Random(), removed=removed)
        self.steering_seen = steering_seen
        self.tell_workers(scheduler, self.worker_counts)  # observed, not stored: told again
        if phases is not None:
            phases.lap("core build")
        skipped = snapshot.unconfigured(scheduler.policies)
        if skipped and only is None:
            log.warning("%d unfinished jobs belong to dependencies no longer configured; they wait", skipped)
        log.info(
            "rebuilt from PostgreSQL: %d unfinished jobs in memory (%d held), %d first attempts "
            "in %d scopes left in the store, %d admissions in rate windows",
            len(snapshot.jobs),
            sum(s.held for s in scheduler.stats()),
            sum(entry.waiting for entry in snapshot.backlog),
            len(snapshot.backlog),
            sum(len(v) for v in snapshot.admissions.values()),
        )
        return scheduler

    async def rebuild_in_term(self, store: Store, only: Collection[str] | None = None) -> Scheduler:
        """After a tick failed for what a message carried (admission_loop): the live core is
        replaced, and /scopes and /why must answer from the new one."""
        scheduler = await self.rebuild(store, only)
        self.service.inspector.attach(scheduler, store)
        return scheduler

    def tell_broker_version(self, connection: broker.Connection) -> None:
        if not self._told_broker_version:  # once per process
            self._told_broker_version = True
            warn_unchecked_cc(connection)

    def tell_workers(self, scheduler: Scheduler, counts: dict[str, int]) -> bool:
        """The core learns each ready queue's consumer count; True if a dependency's changed
        between none and some (its admissions pause or resume)."""
        self.worker_counts = counts
        changed = False
        for dependency, consumers in counts.items():
            self.service.metrics.ready_consumers.labels(dependency).set(consumers)
            if scheduler.knows(dependency):
                queue = topology.ready_queue(dependency)
                changed = scheduler.observe_workers(dependency, consumers, queue) or changed
        return changed

    async def declare(self, connection: broker.Connection, dependencies: Iterable[str]) -> list[str]:
        """Declare what is missing of these dependencies' topology, queues of the policy's type."""
        queue_type = self.service.config.queue_type
        return await topology.declare_topology(connection, dependencies, queue_type=queue_type)

    def outbox(
        self,
        store: Store,
        publisher: Publisher,
        epoch: int,
        scheduler: Scheduler,
        leftovers: Callable[[], Awaitable[list[OutboxMessage]]] | None = None,
    ) -> OutboxRelay:
        longest_lease = max((p.lease_timeout for p in scheduler.policies.values()), default=0.0)
        return OutboxRelay(store.outbox, publisher, epoch, self.service.clock, longest_lease, leftovers)

    def pruner(self, store: Store, term: Term) -> Pruner:
        # The term's policy of record (janus apply), not this process's file: a version applied
        # during the term changes retention from the next term on.
        service = self.service
        config = service.running.config if service.running is not None else service.config
        return Pruner(
            store=store,
            term=term,
            retention=config.retention_policies(),
            sizing=config.retention.sizing(),
            every=config.retention.prune_every,
            metrics=service.metrics,
            clock=service.clock,
        )

    def admission_loop(
        self,
        *,
        running: Running,
        scheduler: Scheduler,
        session: LeaderSession,
        publisher: Publisher,
        inbox: Inbox,
        term: Term,
        publishing: asyncio.TaskGroup,
        rebuild: Callable[[], Awaitable[Scheduler]],
        outbox: OutboxRelay,
    ) -> AdmissionLoop:
        return AdmissionLoop(
            scheduler=scheduler,
            session=session,
            publisher=publisher,
            inbox=inbox,
            term=term,
            metrics=self.service.metrics,
            options=tick_options(running),
            clock=self.service.clock,
            publishing=publishing,
            rebuild=rebuild,
            outbox=outbox,
            bad_results_limit=running.config.bad_results_limit,
        )

    async def consume_all(
        self,
        connection: broker.Connection,
        consumers: Iterable[ConsumerSpec],
        publisher: Publisher,
        group: asyncio.TaskGroup,
    ) -> tuple[list[Consuming], asyncio.Task[None]]:
        """Start every consumer; a task watches their channels and the publisher's, and fails
        (ending the term) if the broker closes one."""
        consuming = [
            await consume(connection, queue, count, callback) for queue, count, callback in consumers
        ]
        channels = [("the publishing channel", publisher.channel)]
        channels += [("a consuming channel", consumer.channel) for consumer in consuming]
        watch = group.create_task(broker.closing(connection, channels), name="broker")
        return consuming, watch

    def admitting(self, epoch: int | None = None) -> None:
        """The term's consumers run: it leads, and the reconnection backoff starts over."""
        service = self.service
        service.leading.set()
        service.health.become(Role.LEADING, epoch=epoch)
        self.failures = 0
        service.metrics.recovering.set(0)


def tick_options(running: Running) -> TickOptions:
    return TickOptions(
        max_payload_bytes=running.config.max_payload_bytes,
        published_outcomes=running.published_outcomes(),
    )
