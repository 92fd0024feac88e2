"""Wiring and supervision: stand by, lead, rebuild, run the supervised tasks, recover, drain on SIGTERM.

Every long-running loop of a term runs in one TaskGroup: if any of them fails,
the others are cancelled and the term ends at once, so nothing more is admitted.
What happens next depends on what failed (docs/failover.md):

- the lease (another process took it, or it could not be renewed in time): step
  down and stand by again on the same database pool;
- the broker or the database (StoreError, BrokerError: the adapters translate their
  drivers' errors into these): the in-memory core may be ahead of the database, so it is dropped with
  the term; the lease is released if the database still answers; every
  connection is cut; after a capped exponential backoff with jitter the process
  starts again by the normal path (connect, acquire the lease, rebuild from
  PostgreSQL, admit);
- anything else is a bug: it propagates and the process stops (non-zero), for
  its supervisor to restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import signal
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from typing import Any

from janus import logs
from janus.api.changes import RecentChanges
from janus.api.metrics import Metrics
from janus.broker import connection as broker
from janus.broker import intake_upgrade, topology
from janus.broker.consumer import Consuming, consume
from janus.broker.publisher import Publisher
from janus.config import JanusConfig
from janus.core.backoff import retry_delay
from janus.core.rebuild import history_since
from janus.core.scheduler import Scheduler
from janus.errors import BrokerError, LeadershipLost, StoreError, TopologyConflict
from janus.policy_record import record_of
from janus.service import leadership
from janus.service.admission_loop import AdmissionLoop
from janus.service.broker_version import warn_unchecked_cc
from janus.service.changes import ChangesReader
from janus.service.gc_pauses import GcPauseObserver
from janus.service.health import Health, Role
from janus.service.inbox import UNROUTABLE, Inbox
from janus.service.inspect import Inspector
from janus.service.leadership import Term
from janus.service.member_mode import MemberMode
from janus.service.observe import loop_lag_forever
from janus.service.options import ServiceOptions
from janus.service.outbox import OutboxRelay
from janus.service.owners import OwnersReader
from janus.service.retention import Pruner
from janus.service.steer import Running, Steerer, policy_of_record, steering_of
from janus.service.tick import TickOptions
from janus.service.worker_watch import WorkerWatch
from janus.store.repository import Store
from janus.store.session import LeaderSession

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


PRUNE_EVERY = 60.0
REVIVE_EVERY = 0.5  # how often the leader looks for `janus jobs retry` requests

# Errors that mean "the broker or the database is gone or refuses": the process recovers.
# The adapters (store/, broker/) raise nothing else for a lost or refusing service.
RECOVERABLE: tuple[type[Exception], ...] = (StoreError, BrokerError)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _cause(exc: BaseException) -> str:
    """What ended a term, for the metrics and the logs."""
    leaves = _leaves(exc)
    if any(isinstance(leaf, asyncio.CancelledError) for leaf in leaves):
        return "cancelled"
    if any(isinstance(leaf, LeadershipLost) for leaf in leaves):
        return "lease_lost"
    if any(isinstance(leaf, StoreError) for leaf in leaves):
        return "database"
    if any(isinstance(leaf, RECOVERABLE) for leaf in leaves):
        return "broker"
    return "bug"


class Service:
    def __init__(self, config: JanusConfig, options: ServiceOptions, metrics: Metrics | None = None) -> None:
        self.config = config
        self.options = options
        self.metrics = metrics if metrics is not None else Metrics()
        self.identity = uuid.uuid4()
        self.stop = asyncio.Event()
        self.leading = asyncio.Event()  # set while this process leads with its consumers running
        self.health = Health(
            identity=self.identity, standby_fresh_within=max(2.0, 4 * options.timings.poll_every)
        )
        self.inspector = Inspector(self.clock)  # answers /scopes and /why while leading
        self.changes = RecentChanges()  # the recent changes /status shows, read while leading
        self._clock_offset = 0.0
        self._rng = random.Random()
        self._failures = 0  # consecutive failed attempts to get going: the backoff's exponent
        self._told_broker_version = False
        self._worker_counts: dict[str, int] = {}  # consumers per ready queue, as last counted
        self._store: Store | None = None  # the connection to the database in use, for who_leads
        self.record = record_of(config)  # the policy of the file, as a stored version says it
        self.running: Running | None = None  # the stored version this process runs while it leads
        self._steering_seen = 0  # the highest steering row the last rebuild applied
        self.member: MemberMode | None = None  # in member mode ([scale_out]), while connected
        self.owners: OwnersReader | None = None  # member mode: who leads what, read from the database

    @property
    def owned(self) -> dict[str, int]:
        """Member mode: each dependency this process leads, with its epoch (empty otherwise)."""
        member = self.member
        if member is None or member.loop is None:
            return {}
        return {dependency: owned.epoch for dependency, owned in member.loop.owned.items()}

    def clock(self) -> float:
        """Unix seconds on the database's clock, so that skew between hosts cannot break a window."""
        return time.time() + self._clock_offset

    async def run(self) -> None:
        """Until `stop`: connect, stand by or lead; recover from losing the broker or the database."""
        log.info("starting as %s", self.identity)
        gc_pauses = GcPauseObserver(self.metrics.gc_pause)
        gc_pauses.install()
        lag = asyncio.create_task(loop_lag_forever(self.metrics.loop_lag), name="loop-lag")
        try:
            await self._run_until_stopped()
        finally:
            lag.cancel()
            gc_pauses.remove()

    async def _run_until_stopped(self) -> None:
        while not self.stop.is_set():
            failure: BaseException | None = None
            try:
                await self._connected()
            except* RECOVERABLE as group:  # anything else is a bug: it stops the process
                failure = group
            if failure is None:
                break
            self._failures += 1
            delay = retry_delay(self.options.reconnect, self._failures, self._rng)
            leaves = _leaves(failure)
            self.health.become(Role.RECOVERING, detail=str(leaves[0]))
            self.metrics.recovering.set(1)
            log.warning(
                "lost the %s (%s); reconnecting in %.2f s",
                _cause(failure),
                "; ".join(str(leaf) or type(leaf).__name__ for leaf in leaves),
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=delay)
            if self.stop.is_set():
                log.info("stopping while reconnecting: nothing is held, nothing to drain")
        self.health.become(Role.STOPPING)

    async def _connected(self) -> None:
        """One connection to the database: stand by and lead until `stop`, or until the database
        or the broker fails (raised; the caller reconnects)."""
        store = await self._connect_store()
        clean = False
        probe: broker.Connection | None = None
        try:
            applied = await store.migrate()
            if applied:
                log.info("applied migrations %s", applied)
            # Held while standing by: a process that cannot reach the broker must not take the
            # lease (a new epoch for nothing) from a standby that can. Terms use their own.
            probe = await self._connect_broker("probe")
            if self.config.scale_out.enabled:
                self.member = MemberMode(self, store)
                try:
                    await self.member.run()
                finally:
                    self.member = None
            while not self.stop.is_set():
                self.health.become(Role.STANDBY)
                term = await leadership.acquire(
                    store,
                    self.identity,
                    self.options.timings,
                    self.stop,
                    on_poll=self._polled,
                    may_lead=lambda: probe is not None and not probe.is_closed,
                )
                if term is None:
                    if probe.is_closed and not self.stop.is_set():
                        raise BrokerError("the connection to RabbitMQ closed while standing by")
                    break
                lost: BaseException | None = None
                try:
                    await self._lead(store, term)
                except* LeadershipLost as group:
                    lost = group
                if lost is not None:
                    log.warning(
                        "stepping down from epoch %d as %s: %s", term.epoch, self.identity, _leaves(lost)[0]
                    )
                    # The term's statements were cut off mid-flight: no connection of its pool is
                    # trusted again (asyncpg may hold one mid-operation).
                    store.terminate()
                    store = await self._connect_store()
            clean = True
        finally:
            if probe is not None:
                await broker.close(probe)
            if clean:
                await store.close()
            else:
                store.terminate()

    async def _connect_store(self) -> Store:
        self._store = await Store.connect(
            self.config.database_url,
            application_name=f"janus-{self.identity}",
            timeout=self.options.db_timeout,
        )
        return self._store

    async def who_leads(self) -> dict[str, Any] | None:
        """Who holds the lease, as the database tells it: a standby's answer to `janus status`."""
        store = self._store
        if store is None:
            return None
        holder = await store.who_leads()
        if holder is None:
            return None
        return {
            "identity": str(holder.holder),
            "epoch": holder.epoch,
            "live": holder.live,
            "address": holder.address,
        }

    def _polled(self, reached: bool) -> None:
        # The backoff is reset only once a term admits: a standby that reaches the database
        # may still fail to lead (no broker), and must not retry that at full speed.
        self.health.polled(reached)
        if reached:
            self.metrics.recovering.set(0)

    async def _lead(self, store: Store, term: Term) -> None:
        """One term: renew the lease from the start, rebuild, admit; ends by stop or by failure."""
        self.health.become(Role.REBUILDING, epoch=term.epoch)
        epoch_token = logs.term_epoch.set(term.epoch)
        self.metrics.is_leader.set(1)
        self.metrics.leader_epoch.set(term.epoch)
        cause = "stopped"
        try:
            async with asyncio.TaskGroup() as group:
                # Renewing starts before the rebuild, so a long rebuild cannot outlive the lease.
                renew = group.create_task(leadership.keep(store, term, self.options.timings), name="lease")
                await self._serve_term(store, term)
                renew.cancel()
        except BaseException as exc:
            cause = _cause(exc)
            raise
        finally:
            self.leading.clear()
            self.metrics.is_leader.set(0)
            self.metrics.terms_ended.labels(cause).inc()
            log.info("term %d of %s ended: %s", term.epoch, self.identity, cause)
            logs.term_epoch.reset(epoch_token)
            if cause not in ("bug", "cancelled"):
                # Hand over at once. After a failure too: whoever leads next (perhaps us) starts a
                # new term with a new epoch, and rebuilds from what the database holds.
                await leadership.release(store, term, timeout=min(self.options.db_timeout, 1.0))

    async def _serve_term(self, store: Store, term: Term) -> None:
        sent = time.time()
        database_now = await store.database_time()
        self._clock_offset = database_now - (sent + time.time()) / 2
        connection = await self._connect_broker()
        try:
            self.running = await policy_of_record(store, term, self.config, self.record)
            self._policy_metrics()
            scheduler = await self._rebuild(store)
            # It runs this version, and every pause and override so far: the commands waiting say so.
            async with store.leader_transaction(term.holder, term.epoch) as tx:
                await tx.mark_version_applied(self.running.version, term.epoch)
                await tx.mark_steering_applied(self._steering_seen, term.epoch)
            self.inspector.attach(scheduler, store)
            await self._run_term(store, term, connection, scheduler)
        finally:
            self.inspector.detach()
            await broker.close(connection)

    async def _connect_broker(self, purpose: str = "term") -> broker.Connection:
        # Refused credentials or vhost raise ConnectionSettingsError, which is not recoverable.
        return await broker.connect(
            self.config.amqp_url,
            name=f"janus-{self.identity}-{purpose}",
            timeout=self.options.db_timeout,
            heartbeat=self.options.amqp_heartbeat,
        )

    def _policy_metrics(self) -> None:
        running = self.running
        if running is not None:
            self.metrics.policy_version.set(running.version)
            self.metrics.policy_file_differs.set(1 if running.file_differs else 0)

    async def _rebuild(self, store: Store, only: Collection[str] | None = None) -> Scheduler:
        """Every budget from PostgreSQL, before the first admission of the term (and after a new
        version of the policy): the version of record, with the operators' pauses and overrides.
        `only`: member mode's dependencies (the others, and removed ones, are other members')."""
        running = self.running
        if running is None:
            raise RuntimeError("the policy of record is read before the core is rebuilt")
        policies = [p for p in running.policies() if only is None or p.name in only]
        removed = running.removed if only is None else ()
        steering_seen, rows = await store.policy_log.steering_in_force()
        steering = steering_of(rows)
        admissions_since, budget_since = history_since([*policies, *removed], self.clock(), steering)
        snapshot = await store.snapshot(admissions_since=admissions_since, budget_since=budget_since)
        snapshot = dataclasses.replace(snapshot, steering=steering)
        scheduler = Scheduler.rebuilt(policies, snapshot, self.clock(), random.Random(), removed=removed)
        self._steering_seen = steering_seen
        self._tell_workers(scheduler, self._worker_counts)  # observed, not stored: told again
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

    async def _rebuild_in_term(self, store: Store, only: Collection[str] | None = None) -> Scheduler:
        """After a tick failed for what a message carried (admission_loop): the live core is
        replaced, and /scopes and /why must answer from the new one."""
        scheduler = await self._rebuild(store, only)
        self.inspector.attach(scheduler, store)
        return scheduler

    async def _run_term(
        self, store: Store, term: Term, connection: broker.Connection, scheduler: Scheduler
    ) -> None:
        self._tell_broker_version(connection)
        if await intake_upgrade.is_partitioned(connection):
            # Its janus.q.intake beside the partitioned path would leave a copy of every job unread.
            raise TopologyConflict(
                "the broker is set up for member mode (janus broker-upgrade --scale-out): set "
                "[scale_out] enabled = true in every process, or run `janus broker-upgrade --back` first"
            )
        declared = await self._declare(connection, scheduler.policies.keys())
        publisher = await Publisher.open(connection)
        if declared:
            log.info("declared the missing topology %s", declared)
        inbox = Inbox()
        async with store.leader_session(term.holder, term.epoch) as session:
            await self._run_consumers(store, session, term, connection, scheduler, publisher, inbox)

    async def _run_consumers(
        self,
        store: Store,
        session: LeaderSession,
        term: Term,
        connection: broker.Connection,
        scheduler: Scheduler,
        publisher: Publisher,
        inbox: Inbox,
    ) -> None:
        if self.running is None:
            raise RuntimeError("the policy of record is read before the term runs")
        # A channel per queue: each results queue's deliveries are acked by multiple-acks of
        # their own, whatever another dependency's queue holds (janus/service/inbox.py).
        size = self.running.config.max_message_size
        intake, results = prefetch(PREFETCH, size), prefetch(RESULTS_PREFETCH, size)
        consumers = [
            (topology.INTAKE_QUEUE, intake, inbox.on_intake),
            *(
                (topology.results_queue(dependency), results, inbox.on_result(dependency))
                for dependency in scheduler.policies
            ),
            (topology.UNROUTABLE_QUEUE, results, inbox.on_result(UNROUTABLE)),
            (topology.RETURNED_QUEUE, intake, inbox.on_returned),
        ]
        workers = WorkerWatch(connection, scheduler.policies, self.options.worker_poll_every)
        self._tell_workers(scheduler, await workers.poll())  # known before the first admission
        longest_lease = max((p.lease_timeout for p in scheduler.policies.values()), default=0.0)
        outbox = OutboxRelay(store.outbox, publisher, term.epoch, self.clock, longest_lease)
        async with asyncio.TaskGroup() as group:
            loop = AdmissionLoop(
                scheduler=scheduler,
                session=session,
                publisher=publisher,
                inbox=inbox,
                term=term,
                metrics=self.metrics,
                options=TickOptions(
                    max_payload_bytes=self.running.config.max_payload_bytes,
                    published_outcomes=self.running.published_outcomes(),
                ),
                clock=self.clock,
                publishing=group,
                rebuild=lambda: self._rebuild_in_term(store),
                outbox=outbox,
                bad_results_limit=self.running.config.bad_results_limit,
            )
            consuming = [
                await consume(connection, queue, prefetch, callback)
                for queue, prefetch, callback in consumers
            ]
            channels = [("the publishing channel", publisher.channel)]
            channels += [("a consuming channel", consumer.channel) for consumer in consuming]
            watch = group.create_task(broker.closing(connection, channels), name="broker")
            draining = asyncio.Event()

            def on_counts(counts: dict[str, int]) -> None:
                if self._tell_workers(loop.scheduler, counts):
                    inbox.ready.set()  # a tick now: a dependency's workers came (or went)

            group.create_task(workers.run(on_counts, draining), name="worker-watch")
            self.leading.set()
            self.health.become(Role.LEADING, epoch=term.epoch)
            self._failures = 0
            self.metrics.recovering.set(0)
            log.info("admitting as %s in epoch %d", self.identity, term.epoch)
            group.create_task(self._drain_on_stop(draining, consuming), name="drain-on-stop")
            group.create_task(self._prune(store, term, scheduler, draining), name="prune-admissions")
            group.create_task(outbox.run(draining), name="outbox")
            group.create_task(
                self._revive(store, term, lambda: loop.scheduler, inbox, draining), name="revive-dead-jobs"
            )
            watches: list[asyncio.Task[None]] = []

            async def on_version(running: Running) -> None:
                """A new version: the queues of the dependencies it adds exist before it runs."""
                added = [name for name in running.config.dependencies if not loop.scheduler.knows(name)]
                if added:
                    declared = await self._declare(connection, added)
                    log.info("version %d adds %s: declared %s", running.version, ", ".join(added), declared)
                    for name in added:
                        queue = topology.results_queue(name)
                        consumer = await consume(connection, queue, results, inbox.on_result(name))
                        consuming.append(consumer)
                        channel = [("a consuming channel", consumer.channel)]
                        watches.append(
                            group.create_task(broker.closing(connection, channel), name=f"broker-{name}")
                        )
                    workers.watch(added)
                self.running = running
                self._policy_metrics()
                loop.set_options(
                    TickOptions(
                        max_payload_bytes=running.config.max_payload_bytes,
                        published_outcomes=running.published_outcomes(),
                    )
                )

            assert self.running is not None
            changes = ChangesReader(store, self.changes)
            group.create_task(changes.run(draining), name="recent-changes")
            steerer = Steerer(
                store=store,
                term=term,
                inbox=inbox,
                running=self.running,
                file=self.config,
                on_version=on_version,
                seen=self._steering_seen,
                on_applied=changes.wanted,
            )
            group.create_task(steerer.run(draining), name="steer")
            group.create_task(self._pruner(store, term).run(draining), name="retention")
            await loop.run(draining)
            watch.cancel()
            for extra in watches:
                extra.cancel()
        await workers.close()

    async def _declare(self, connection: broker.Connection, dependencies: Iterable[str]) -> list[str]:
        """Declare what is missing of these dependencies' topology, queues of the policy's type."""
        return await topology.declare_topology(connection, dependencies, queue_type=self.config.queue_type)

    def _tell_broker_version(self, connection: broker.Connection) -> None:
        if not self._told_broker_version:  # once per process
            self._told_broker_version = True
            warn_unchecked_cc(connection)

    def _tell_workers(self, scheduler: Scheduler, counts: dict[str, int]) -> bool:
        """The core learns each ready queue's consumer count; True if a dependency's changed
        between none and some (its admissions pause or resume)."""
        self._worker_counts = counts
        changed = False
        for dependency, consumers in counts.items():
            self.metrics.ready_consumers.labels(dependency).set(consumers)
            if scheduler.knows(dependency):
                queue = topology.ready_queue(dependency)
                changed = scheduler.observe_workers(dependency, consumers, queue) or changed
        return changed

    async def _drain_on_stop(self, draining: asyncio.Event, consuming: list[Consuming]) -> None:
        await self.stop.wait()
        self.health.become(Role.STOPPING)
        log.info("stopping: no new deliveries, finishing what was delivered")
        await asyncio.gather(*(consumer.cancel() for consumer in consuming), return_exceptions=True)
        draining.set()

    async def _prune(self, store: Store, term: Term, scheduler: Scheduler, draining: asyncio.Event) -> None:
        """Admissions older than every rate window can never matter again."""
        longest = max(
            (max(p.longest_window, p.retry.budget_window) for p in scheduler.policies.values()), default=0.0
        )
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

    def _pruner(self, store: Store, term: Term) -> Pruner:
        # The term's policy of record (janus apply), not this process's file: a version applied
        # during the term changes retention from the next term on.
        config = self.running.config if self.running is not None else self.config
        return Pruner(
            store=store,
            term=term,
            retention=config.retention_policies(),
            sizing=config.retention.sizing(),
            every=config.retention.prune_every,
            metrics=self.metrics,
            clock=self.clock,
        )

    async def _revive(
        self,
        store: Store,
        term: Term,
        scheduler: Callable[[], Scheduler],
        inbox: Inbox,
        draining: asyncio.Event,
    ) -> None:
        """Apply `janus jobs retry` requests: the store marks the dead jobs waiting (fenced), then
        the admission loop hands them to the core (docs/decisions.md: why through the database)."""
        while not draining.is_set():
            configured = list(scheduler().policies)  # a new version may add a dependency
            try:
                await asyncio.wait_for(draining.wait(), timeout=REVIVE_EVERY)
                return
            except TimeoutError:
                pass
            revived = await store.revive_requested(term.holder, term.epoch, self.clock(), configured)
            if revived:
                log.info("made %d dead jobs eligible again (janus jobs retry)", len(revived))
                inbox.add_revived(revived)


def install_signal_handlers(service: Service) -> None:
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        if not service.stop.is_set():
            log.info("%s received: stopping", sig.name)
        service.stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
