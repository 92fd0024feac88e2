"""Wiring and supervision: stand by, lead, rebuild, run the supervised tasks, drain on SIGTERM.

Every long-running loop of a term runs in one TaskGroup: if any of them fails,
the others are cancelled and the term ends. Losing the lease ends the term and
the process stands by again; any other failure stops the process (non-zero),
since its in-memory core may be ahead of the database.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
import uuid
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractConnection

from janus.api.metrics import Metrics
from janus.broker import topology
from janus.broker.consumer import Consuming, consume
from janus.broker.publisher import Publisher
from janus.config import JanusConfig, Settings
from janus.core.scheduler import Scheduler
from janus.errors import BrokerError, LeadershipLost
from janus.service import leadership
from janus.service.admission_loop import AdmissionLoop
from janus.service.inbox import Inbox
from janus.service.leadership import LeaseTimings, Term
from janus.store.repository import LeaderSession, Store

log = logging.getLogger("janus.service")

PREFETCH = 2000  # unacked deliveries per consumer channel: bounds the inbox
PRUNE_EVERY = 60.0


@dataclass(frozen=True, kw_only=True, slots=True)
class ServiceOptions:
    timings: LeaseTimings = field(default_factory=LeaseTimings)
    serve_metrics: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceOptions:
        return cls(
            timings=LeaseTimings(
                lease=settings.leader_lease,
                renew_every=settings.leader_renew_every,
                poll_every=settings.standby_poll_every,
            ),
            serve_metrics=settings.http_port != 0,
        )


class Service:
    def __init__(self, config: JanusConfig, options: ServiceOptions, metrics: Metrics | None = None) -> None:
        self.config = config
        self.options = options
        self.metrics = metrics if metrics is not None else Metrics()
        self.identity = uuid.uuid4()
        self.stop = asyncio.Event()
        self.leading = asyncio.Event()  # set while this process leads with its consumers running
        self._clock_offset = 0.0

    def clock(self) -> float:
        """Unix seconds on the database's clock, so that skew between hosts cannot break a window."""
        return time.time() + self._clock_offset

    async def run(self) -> None:
        store = await Store.connect(self.config.database_url, application_name=f"janus-{self.identity}")
        try:
            applied = await store.migrate()
            if applied:
                log.info("applied migrations %s", applied)
            while not self.stop.is_set():
                term = await leadership.acquire(store, self.identity, self.options.timings, self.stop)
                if term is None:
                    break
                try:
                    await self._lead(store, term)
                except* LeadershipLost as group:
                    log.error("stepping down: %s", group.exceptions[0])
                finally:
                    self.leading.clear()
                    self.metrics.is_leader.set(0)
        finally:
            await store.close()

    async def _lead(self, store: Store, term: Term) -> None:
        self.metrics.is_leader.set(1)
        self.metrics.leader_epoch.set(term.epoch)
        sent = time.time()
        database_now = await store.database_time()
        self._clock_offset = database_now - (sent + time.time()) / 2
        connection = await self._connect_broker()
        try:
            scheduler = await self._rebuild(store)
            async with connection:
                await self._run_term(store, term, connection, scheduler)
        finally:
            if not connection.is_closed:
                await connection.close()
        if self.stop.is_set():
            await leadership.release(store, term)

    async def _connect_broker(self) -> AbstractConnection:
        try:
            return await aio_pika.connect(
                self.config.amqp_url, client_properties={"connection_name": f"janus-{self.identity}"}
            )
        except (OSError, aio_pika.exceptions.AMQPError) as exc:
            raise BrokerError(f"cannot connect to RabbitMQ: {exc}") from exc

    async def _rebuild(self, store: Store) -> Scheduler:
        """Every budget from PostgreSQL, before the first admission of the term."""
        scheduler = Scheduler(self.config.policies(), random.Random())
        jobs = await store.load_active_jobs()
        skipped = sum(1 for job in jobs if not scheduler.restore(job))
        backlog = await store.load_backlog()
        for entry in backlog:
            scheduler.note_seq(entry.max_seq)
            if scheduler.knows(entry.dependency):
                scheduler.restore_backlog(
                    entry.dependency, entry.scope, count=entry.waiting, max_seq=entry.max_seq
                )
            else:
                skipped += entry.waiting
        if skipped:
            log.warning("%d unfinished jobs belong to dependencies no longer configured; they wait", skipped)
        longest = max((p.longest_window for p in scheduler.policies.values()), default=0.0)
        history = await store.load_admissions_since(self.clock() - longest - 1.0)
        for dependency, admissions in history.items():
            scheduler.restore_admissions(dependency, admissions)
        held = sum(s.held for s in scheduler.stats())
        log.info(
            "rebuilt from PostgreSQL: %d unfinished jobs in memory (%d held), %d first attempts "
            "in %d scopes left in the store, %d admissions in rate windows",
            len(jobs),
            held,
            sum(entry.waiting for entry in backlog),
            len(backlog),
            sum(len(v) for v in history.values()),
        )
        return scheduler

    async def _run_term(
        self, store: Store, term: Term, connection: AbstractConnection, scheduler: Scheduler
    ) -> None:
        declared = await topology.declare_topology(connection, scheduler.policies.keys())
        if declared:
            log.info("declared the missing topology %s", declared)
        publisher = await Publisher.open(connection)
        inbox = Inbox()
        async with store.leader_session(term.holder, term.epoch) as session:
            await self._run_consumers(store, session, term, connection, scheduler, publisher, inbox)

    async def _run_consumers(
        self,
        store: Store,
        session: LeaderSession,
        term: Term,
        connection: AbstractConnection,
        scheduler: Scheduler,
        publisher: Publisher,
        inbox: Inbox,
    ) -> None:
        consumers = [
            (topology.INTAKE_QUEUE, inbox.on_intake),
            (topology.RESULTS_QUEUE, inbox.on_result),
            (topology.RETURNED_QUEUE, inbox.on_returned),
        ]
        async with asyncio.TaskGroup() as group:
            loop = AdmissionLoop(
                scheduler=scheduler,
                session=session,
                publisher=publisher,
                inbox=inbox,
                term=term,
                metrics=self.metrics,
                max_payload_bytes=self.config.max_payload_bytes,
                clock=self.clock,
                publishing=group,
                rebuild=lambda: self._rebuild(store),
            )
            consuming = [
                await consume(connection, queue, PREFETCH, callback) for queue, callback in consumers
            ]
            self.leading.set()
            draining = asyncio.Event()
            group.create_task(self._drain_on_stop(draining, consuming), name="drain-on-stop")
            renew = group.create_task(leadership.keep(store, term, self.options.timings), name="lease")
            group.create_task(self._prune(store, term, scheduler, draining), name="prune-admissions")
            await loop.run(draining)
            renew.cancel()

    async def _drain_on_stop(self, draining: asyncio.Event, consuming: list[Consuming]) -> None:
        await self.stop.wait()
        log.info("stopping: no new deliveries, finishing what was delivered")
        await asyncio.gather(*(consumer.cancel() for consumer in consuming), return_exceptions=True)
        draining.set()

    async def _prune(self, store: Store, term: Term, scheduler: Scheduler, draining: asyncio.Event) -> None:
        """Admissions older than every rate window can never matter again."""
        longest = max((p.longest_window for p in scheduler.policies.values()), default=0.0)
        while not draining.is_set():
            try:
                await asyncio.wait_for(draining.wait(), timeout=PRUNE_EVERY)
                return
            except TimeoutError:
                pass
            keep_after = self.clock() - max(2 * longest, 3600.0)
            pruned = await store.prune_admissions(term.holder, term.epoch, keep_after)
            if pruned:
                log.debug("pruned %d old admissions", pruned)


def install_signal_handlers(service: Service) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop.set)
