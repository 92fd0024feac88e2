"""The single leader (no [scale_out]): stand by for the lease, then one term after another.

A term renews the lease from its start, rebuilds the core from PostgreSQL and admits until
`stop` or a failure; every loop of the term runs in one TaskGroup, so that one failing ends the
term at once (app.py says what happens next). Losing the lease steps down to stand by again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from janus import logs
from janus.broker import connection as broker
from janus.broker import intake_upgrade, topology
from janus.broker.consumer import Consuming, consume
from janus.broker.publisher import Publisher
from janus.core.scheduler import Scheduler
from janus.errors import BrokerError, LeadershipLost, TopologyConflict
from janus.service import leadership
from janus.service.changes import ChangesReader
from janus.service.health import Role
from janus.service.inbox import UNROUTABLE, Inbox
from janus.service.leadership import Term
from janus.service.steer import Running, Steerer, policy_of_record
from janus.service.term_kit import (
    PREFETCH,
    RESULTS_PREFETCH,
    ConsumerSpec,
    cause_of,
    leaves_of,
    prefetch,
    tick_options,
)
from janus.service.worker_watch import WorkerWatch
from janus.store.repository import Store
from janus.store.session import LeaderSession

if TYPE_CHECKING:
    from janus.service.app import Service

log = logging.getLogger("janus.service")

PRUNE_EVERY = 60.0
REVIVE_EVERY = 0.5  # how often the leader looks for `janus jobs retry` requests


class LeaderMode:
    """One connection to the database as a would-be single leader, until `stop` or a failure
    (raised). `store` is the connection in use: stepping down replaces it."""

    def __init__(self, service: Service, store: Store) -> None:
        self.service = service
        self.kit = service.kit
        self.store = store

    async def run(self, probe: broker.Connection) -> None:
        """Stand by, lead, step down, stand by again, until `stop`. `probe` is held while
        standing by: a process that cannot reach the broker must not take the lease."""
        service = self.service
        while not service.stop.is_set():
            service.health.become(Role.STANDBY)
            term = await leadership.acquire(
                self.store,
                service.identity,
                service.options.timings,
                service.stop,
                on_poll=self.kit.polled,
                may_lead=lambda: not probe.is_closed,
            )
            if term is None:
                if probe.is_closed and not service.stop.is_set():
                    raise BrokerError("the connection to RabbitMQ closed while standing by")
                break
            lost: BaseException | None = None
            try:
                await self._lead(self.store, term)
            except* LeadershipLost as group:
                lost = group
            if lost is not None:
                log.warning(
                    "stepping down from epoch %d as %s: %s", term.epoch, service.identity, leaves_of(lost)[0]
                )
                # The term's statements were cut off mid-flight: no connection of its pool is
                # trusted again (asyncpg may hold one mid-operation).
                self.store.terminate()
                self.store = await self.kit.connect_store()

    async def _lead(self, store: Store, term: Term) -> None:
        """One term: renew the lease from the start, rebuild, admit; ends by stop or by failure."""
        service = self.service
        service.health.become(Role.REBUILDING, epoch=term.epoch)
        epoch_token = logs.term_epoch.set(term.epoch)
        service.metrics.is_leader.set(1)
        service.metrics.leader_epoch.set(term.epoch)
        cause = "stopped"
        try:
            async with asyncio.TaskGroup() as group:
                # Renewing starts before the rebuild, so a long rebuild cannot outlive the lease.
                renew = group.create_task(leadership.keep(store, term, service.options.timings), name="lease")
                await self._serve_term(store, term)
                renew.cancel()
        except BaseException as exc:
            cause = cause_of(exc)
            raise
        finally:
            service.leading.clear()
            service.metrics.is_leader.set(0)
            service.metrics.terms_ended.labels(cause).inc()
            log.info("term %d of %s ended: %s", term.epoch, service.identity, cause)
            logs.term_epoch.reset(epoch_token)
            if cause not in ("bug", "cancelled"):
                # Hand over at once. After a failure too: whoever leads next (perhaps us) starts a
                # new term with a new epoch, and rebuilds from what the database holds.
                await leadership.release(store, term, timeout=min(service.options.db_timeout, 1.0))

    async def _serve_term(self, store: Store, term: Term) -> None:
        service, kit = self.service, self.kit
        await kit.sync_clock(store)
        connection = await kit.connect_broker()
        try:
            service.running = await policy_of_record(store, term, service.config, service.record)
            kit.policy_metrics()
            scheduler = await kit.rebuild(store)
            # It runs this version, and every pause and override so far: the commands waiting say so.
            async with store.leader_transaction(term.holder, term.epoch) as tx:
                await tx.mark_version_applied(service.running.version, term.epoch)
                await tx.mark_steering_applied(kit.steering_seen, term.epoch)
            service.inspector.attach(scheduler, store)
            await self._run_term(store, term, connection, scheduler)
        finally:
            service.inspector.detach()
            await broker.close(connection)

    async def _run_term(
        self, store: Store, term: Term, connection: broker.Connection, scheduler: Scheduler
    ) -> None:
        self.kit.tell_broker_version(connection)
        if await intake_upgrade.is_partitioned(connection):
            # Its janus.q.intake beside the partitioned path would leave a copy of every job unread.
            raise TopologyConflict(
                "the broker is set up for member mode (janus broker-upgrade --scale-out): set "
                "[scale_out] enabled = true in every process, or run `janus broker-upgrade --back` first"
            )
        declared = await self.kit.declare(connection, scheduler.policies.keys())
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
        service, kit = self.service, self.kit
        if service.running is None:
            raise RuntimeError("the policy of record is read before the term runs")
        # A channel per queue: each results queue's deliveries are acked by multiple-acks of
        # their own, whatever another dependency's queue holds (janus/service/inbox.py).
        size = service.running.config.max_message_size
        intake, results = prefetch(PREFETCH, size), prefetch(RESULTS_PREFETCH, size)
        consumers: list[ConsumerSpec] = [
            (topology.INTAKE_QUEUE, intake, inbox.on_intake),
            *(
                (topology.results_queue(dependency), results, inbox.on_result(dependency))
                for dependency in scheduler.policies
            ),
            (topology.UNROUTABLE_QUEUE, results, inbox.on_result(UNROUTABLE)),
            (topology.RETURNED_QUEUE, intake, inbox.on_returned),
        ]
        workers = WorkerWatch(connection, scheduler.policies, service.options.worker_poll_every)
        kit.tell_workers(scheduler, await workers.poll())  # known before the first admission
        outbox = kit.outbox(store, publisher, term.epoch, scheduler)
        async with asyncio.TaskGroup() as group:
            loop = kit.admission_loop(
                running=service.running,
                scheduler=scheduler,
                session=session,
                publisher=publisher,
                inbox=inbox,
                term=term,
                publishing=group,
                rebuild=lambda: kit.rebuild_in_term(store),
                outbox=outbox,
            )
            consuming, watch = await kit.consume_all(connection, consumers, publisher, group)
            draining = asyncio.Event()

            def on_counts(counts: dict[str, int]) -> None:
                if kit.tell_workers(loop.scheduler, counts):
                    inbox.ready.set()  # a tick now: a dependency's workers came (or went)

            group.create_task(workers.run(on_counts, draining), name="worker-watch")
            kit.admitting(term.epoch)
            log.info("admitting as %s in epoch %d", service.identity, term.epoch)
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
                    declared = await kit.declare(connection, added)
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
                service.running = running
                kit.policy_metrics()
                loop.set_options(tick_options(running))

            assert service.running is not None
            changes = ChangesReader(store, service.changes)
            group.create_task(changes.run(draining), name="recent-changes")
            steerer = Steerer(
                store=store,
                term=term,
                inbox=inbox,
                running=service.running,
                file=service.config,
                on_version=on_version,
                seen=kit.steering_seen,
                on_applied=changes.wanted,
            )
            group.create_task(steerer.run(draining), name="steer")
            group.create_task(kit.pruner(store, term).run(draining), name="retention")
            await loop.run(draining)
            watch.cancel()
            for extra in watches:
                extra.cancel()
        await workers.close()

    async def _drain_on_stop(self, draining: asyncio.Event, consuming: list[Consuming]) -> None:
        await self.service.stop.wait()
        self.service.health.become(Role.STOPPING)
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
            keep_after = self.service.clock() - max(2 * longest, 3600.0)
            pruned = await store.prune_admissions(term.holder, term.epoch, keep_after)
            if pruned:
                log.debug("pruned %d old admissions", pruned)

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
            revived = await store.revive_requested(term.holder, term.epoch, self.service.clock(), configured)
            if revived:
                log.info("made %d dead jobs eligible again (janus jobs retry)", len(revived))
                inbox.add_revived(revived)
