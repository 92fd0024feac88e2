"""`janus run` as a member (`[scale_out] enabled = true`, docs/scale-out.md): the processes share
the dependencies, each led by one of them under its own lease and epoch.

One term per owned set: the member loop (members.py) heartbeats, plans, claims, renews and hands
over all the time; this module's `TermLanes` never changes a running core. Whenever the set of
dependencies this process leads changes, the term in force ends (drained as on SIGTERM for a
gain or a handover; cancelled at once for a loss) and a new one is rebuilt from PostgreSQL for
the new set. Simple and safe, at a cost: a move pauses every dependency of the two processes
involved for a drain and a rebuild (docs/decisions.md).

Every tick of a member term locks the lease rows of its dependencies first and writes nothing
if one is no longer held in its epoch (store/session.py); janus.leader plays no part in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from janus.broker import connection as broker
from janus.broker import intake_upgrade, topology
from janus.broker.consumer import Consuming
from janus.broker.publisher import Publisher
from janus.core.scheduler import Scheduler
from janus.errors import ConfigError, LeadershipLost
from janus.service.global_duties import GlobalDuties
from janus.service.health import Role
from janus.service.inbox import UNROUTABLE, Inbox
from janus.service.leadership import Term
from janus.service.member_steering import MemberSteering
from janus.service.members import MemberLoop, MemberTimings, Owned
from janus.service.owners import OwnersReader
from janus.service.steer import Running, policy_of_record, running_of
from janus.service.term_kit import PREFETCH, RESULTS_PREFETCH, ConsumerSpec, Phases, prefetch
from janus.service.worker_watch import WorkerWatch
from janus.store.repository import Store
from janus.store.session import LeaderSession

if TYPE_CHECKING:
    from janus.service.app import Service

log = logging.getLogger("janus.members")

A = TypeVar("A")
B = TypeVar("B")

# A member term writes no epoch of its own: each admission carries its dependency's epoch, and
# outbox rows and sent ticks are read by dependency, never compared by epoch (store/sql/outbox.sql).
MEMBER_EPOCH = 0

# While a dependency targeted to this member is still held by another (its old owner notices at
# its next poll, then drains), poll this often for QUICK_WAITS poll periods, then as usual: its
# release is seen within QUICK_POLL, not up to a whole poll later, at some 30 more polls per
# move (and after a kill -9, while the lease runs out: the same).
QUICK_POLL = 0.05
QUICK_WAITS = 3


async def alongside(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both at once. The first failure is raised as it is (not in a group, so that the term's
    end is judged as before) once the other is cancelled and over: nothing outlives the call."""
    one, two = asyncio.ensure_future(first), asyncio.ensure_future(second)
    try:
        a, b = await asyncio.gather(one, two)
    except BaseException:
        one.cancel()
        two.cancel()
        await asyncio.gather(one, two, return_exceptions=True)
        raise
    return a, b


@dataclass
class PollPace:
    """How long to wait before the next poll: `every`, or QUICK_POLL early in a wait for a
    handover to us."""

    every: float
    _waiting_since: float | None = None

    def after(self, waiting: bool, now: float) -> float:
        """The pause after a poll at `now` whose plan waited (`waiting`) for a dependency or not."""
        if not waiting:
            self._waiting_since = None
            return self.every
        if self._waiting_since is None:
            self._waiting_since = now
        if now - self._waiting_since < QUICK_WAITS * self.every:
            return min(QUICK_POLL, self.every)
        return self.every


@dataclass(kw_only=True)
class MemberTerm(Term):
    """A term over a set of dependencies: it may act while every one of them is still ours, in
    the epoch the term was built for, before its local deadline (members.py)."""

    epochs: dict[str, int]
    owned: Callable[[], Mapping[str, Owned]]

    def may_act(self) -> bool:
        owned, now = self.owned(), time.monotonic()
        return all(
            d in owned and owned[d].epoch == e and owned[d].deadline > now for d, e in self.epochs.items()
        )


@dataclass
class TermLanes:
    """The member loop's `Lanes`: records the owned set and has the term runner follow it."""

    owned: dict[str, int] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    term: asyncio.Task[None] | None = None
    term_epochs: dict[str, int] = field(default_factory=dict)
    drain: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def gained(self, dependency: str, epoch: int) -> None:
        # Only recorded: the poll stays short (renewals wait for it); the term task rebuilds.
        self.owned[dependency] = epoch
        self.drain.set()
        self.changed.set()

    async def handover(self, dependency: str) -> None:
        self.owned.pop(dependency, None)
        self.changed.set()
        if self.term is not None and not self.term.done() and dependency in self.term_epochs:
            self.drain.set()  # stop admitting, last tick, confirms, outbox: as on SIGTERM
            await self.ended.wait()

    def restart(self) -> None:
        """Drain the term in force and build the next one (a new version of the policy)."""
        self.drain.set()
        self.changed.set()

    def lost(self, dependency: str) -> None:
        self.owned.pop(dependency, None)
        self.changed.set()
        if self.term is not None and dependency in self.term_epochs:
            self.term.cancel()  # at once: nothing more is committed for it (the fence would refuse)


class MemberMode:
    """One connection to the database as a member, until `stop` or a failure (raised)."""

    def __init__(self, service: Service, store: Store) -> None:
        self.service = service
        self.store = store
        self.lanes = TermLanes()
        timings = service.options.timings
        self.timings = MemberTimings(lease=timings.lease, poll_every=timings.poll_every)
        self._terms_done = asyncio.Event()
        self._declared: set[str] = set()  # dependencies whose queues this process declared
        self._between_polls = asyncio.Event()  # set while no poll runs
        self._between_polls.set()
        self.loop: MemberLoop | None = None
        self.owners: OwnersReader | None = None
        self._draining_since: float | None = None  # when the term in force began to drain
        self._last_ended: float | None = None  # when the last term ended (the wait before the next)

    async def run(self) -> None:
        running = await self._policy_of_record()
        dependencies = running.led()
        self.loop = MemberLoop(
            self.store.membership,
            dependencies,
            self.lanes,
            member=self.service.identity,
            timings=self.timings,
        )
        self.service.health.become(Role.STANDBY)
        service = self.service
        duties = GlobalDuties(
            self.store,
            service.identity,
            service.options.timings,
            lambda: service.running.config if service.running is not None else running.config,
            service.metrics,
            service.clock,
        )
        # Who leads what, from the database, for /status, this member's /readyz and the
        # owners metrics (service/owners.py).
        self.owners = OwnersReader(
            self.store.membership,
            service.metrics,
            dependencies,
            member=service.identity,
            admitting=lambda: service.owned,
        )
        service.owners = self.owners
        service.health.member_view = self.owners.member_view
        async with asyncio.TaskGroup() as group:
            group.create_task(self.owners.run(service.stop), name="owners")
            group.create_task(self._polls(self.loop), name="members")
            group.create_task(self._terms(), name="member-terms")
            group.create_task(duties.run(service.stop), name="global-duties")

    async def _policy_of_record(self) -> Running:
        """The newest stored version. On an empty table, whoever takes the global lease
        (janus.leader) records the file as version 1, fenced as a single leader does."""
        service = self.service
        while not service.stop.is_set():
            newest = await self.store.policy_log.newest()
            if newest is not None:
                return await running_of(self.store.policy_log, newest, service.config)
            sent = time.monotonic()
            epoch = await self.store.try_acquire(service.identity, self.timings.lease)
            if epoch is not None:
                term = Term(holder=service.identity, epoch=epoch, trusted_until=sent + self.timings.lease)
                try:
                    return await policy_of_record(self.store, term, service.config, service.record)
                finally:
                    await self.store.release(service.identity, epoch, service.options.db_timeout)
            await asyncio.sleep(self.timings.poll_every)
        raise ConfigError("stopped before the policy of record could be read")

    async def _polls(self, loop: MemberLoop) -> None:
        """Poll until the terms are done (a stop drains the term first, renewing meanwhile); leave."""
        metrics = self.service.metrics
        led: set[str] = set()
        pace = PollPace(self.timings.poll_every)
        try:
            while not self._terms_done.is_set():
                self._between_polls.clear()
                try:
                    decided = await loop.poll()
                finally:
                    self._between_polls.set()
                self.service.kit.polled(True)  # readiness: a member owning nothing is a fresh standby
                for dependency in led - set(loop.owned):
                    metrics.dependency_led.labels(dependency).set(0)
                led = set(loop.owned)
                for dependency in led:
                    metrics.dependency_led.labels(dependency).set(1)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._terms_done.wait(), pace.after(bool(decided.wait), time.monotonic())
                    )
            await loop.leave()
        finally:
            for dependency in led:
                metrics.dependency_led.labels(dependency).set(0)

    async def _terms(self) -> None:
        """One term per owned set, until `stop`."""
        service, lanes = self.service, self.lanes
        try:
            while not service.stop.is_set():
                stopping = asyncio.create_task(service.stop.wait())
                changed = asyncio.create_task(lanes.changed.wait())
                await asyncio.wait({stopping, changed}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                changed.cancel()
                if service.stop.is_set():
                    break
                # Everything one poll claims goes into one term, not one rebuild per claim.
                await self._between_polls.wait()
                lanes.changed.clear()
                if not lanes.owned:
                    service.health.become(Role.STANDBY)
                    continue
                await self._one_term(dict(lanes.owned))
        finally:
            self._terms_done.set()

    async def _one_term(self, epochs: dict[str, int]) -> None:
        lanes = self.lanes
        lanes.term_epochs = epochs
        lanes.drain = asyncio.Event()
        lanes.ended = asyncio.Event()
        task = asyncio.create_task(self._term(epochs, lanes.drain), name="member-term")
        lanes.term = task
        started = time.monotonic()
        self._draining_since = None
        try:
            await asyncio.wait({task})
        finally:
            lanes.term = None
            lanes.ended.set()
            self._last_ended = time.monotonic()
        cause = "stopped"
        if task.cancelled():
            cause = "lease_lost"
        elif isinstance(task.exception(), LeadershipLost):
            cause = "lease_lost"
            log.warning("member term lost a lease: %s", task.exception())
            # Our view may not know yet: wait for the member loop's next poll before rebuilding.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lanes.changed.wait(), self.timings.poll_every * 2)
            lanes.changed.set()
        elif (failure := task.exception()) is not None:
            raise failure  # the broker or the database: the process recovers (app.py)
        self.service.metrics.terms_ended.labels(cause).inc()
        ended = time.monotonic()
        drained = "" if self._draining_since is None else f" (drain {ended - self._draining_since:.3f} s)"
        log.info(
            "member term over %s ended after %.2f s: %s%s",
            ", ".join(sorted(epochs)),
            ended - started,
            cause,
            drained,
        )

    async def _term(self, epochs: dict[str, int], drain: asyncio.Event) -> None:
        """The term of one owned set: rebuild these dependencies from PostgreSQL, consume their
        queues, admit until drained (a change of the set, or stop)."""
        service, store, kit = self.service, self.store, self.service.kit
        assert self.loop is not None
        loop = self.loop
        term = MemberTerm(
            holder=service.identity,
            epoch=MEMBER_EPOCH,
            trusted_until=0.0,
            epochs=epochs,
            owned=lambda: loop.owned,
        )
        service.health.become(Role.REBUILDING)
        phases = Phases()
        await kit.sync_clock(store)
        started_at = service.clock()
        phases.lap("clock")
        connection = await kit.connect_broker()
        phases.lap("broker")
        service.metrics.is_leader.set(1)
        try:
            newest = await store.policy_log.newest()
            if newest is None:
                raise LeadershipLost("the policy of record is gone")
            service.running = await running_of(store.policy_log, newest, service.config)
            kit.policy_metrics()
            loop.follow(service.running.led())
            if self.owners is not None:
                self.owners.dependencies = loop.dependencies
            owned = set(epochs)
            revived = await store.membership.revived_up_to()  # before the rebuild reads the jobs
            phases.lap("policy")
            kit.tell_broker_version(connection)
            # Every dependency's queues, so that intake for one nobody leads yet waits in its own
            # queue (not in the unrouted one): all at this process's first term, then a new
            # version's. Refused, with the way out, on a broker not upgraded (intake_upgrade.py).
            declare = sorted(set(service.running.config.dependencies) - self._declared | owned)
            # The broker's set-up runs alongside the database's reads: it consumes nothing, and
            # the consumers start (and the first admission comes) only once both are done.
            scheduler, publisher = await alongside(
                kit.rebuild(store, owned, phases), self._set_up_broker(connection, declare, phases)
            )
            phases.lap("broker set-up beyond the rebuild")
            service.inspector.attach(scheduler, store)
            inbox = Inbox()
            async with store.leader_session(service.identity, MEMBER_EPOCH, fenced=epochs) as session:
                await self._serve(
                    term, connection, scheduler, publisher, inbox, session, drain, started_at, revived, phases
                )
        finally:
            service.metrics.is_leader.set(0)
            service.leading.clear()
            service.inspector.detach()
            await broker.close(connection)

    async def _set_up_broker(
        self, connection: broker.Connection, declare: list[str], phases: Phases
    ) -> Publisher:
        started = time.monotonic()
        queue_type = self.service.config.queue_type
        await topology.declare_topology(connection, declare, queue_type=queue_type, partitioned=True)
        await intake_upgrade.declare_partitioned_intake(connection, declare, queue_type)
        self._declared.update(declare)
        publisher = await Publisher.open(connection)
        phases.alongside["declares and publisher"] = time.monotonic() - started
        return publisher

    async def _serve(
        self,
        term: MemberTerm,
        connection: broker.Connection,
        scheduler: Scheduler,
        publisher: Publisher,
        inbox: Inbox,
        session: LeaderSession,
        drain: asyncio.Event,
        started_at: float,
        revived: int,
        phases: Phases,
    ) -> None:
        service, store, kit = self.service, self.store, self.service.kit
        running = service.running
        assert running is not None
        owned = sorted(term.epochs)
        size = running.config.max_message_size
        intake, results = prefetch(PREFETCH, size), prefetch(RESULTS_PREFETCH, size)
        consumers: list[ConsumerSpec] = [
            *((topology.intake_queue(d), intake, inbox.on_intake) for d in owned),
            *((topology.results_queue(d), results, inbox.on_result(d)) for d in owned),
            # Shared: each member reads a share. Results of no dependency are set aside by whoever
            # reads them; a returned admission of a dependency this member does not lead is
            # unknown to its core: that slot is freed by its owner at the admission's lease end.
            (topology.UNROUTABLE_QUEUE, results, inbox.on_result(UNROUTABLE)),
            (topology.RETURNED_QUEUE, intake, inbox.on_returned),
            # Intake whose routing key names no dependency's queue: set aside (unknown_dependency)
            # by whichever member reads it, as one leader does.
            (intake_upgrade.INTAKE_UNROUTED_QUEUE, intake, inbox.on_intake),
        ]
        phases.lap("session")
        workers = WorkerWatch(connection, scheduler.policies, service.options.worker_poll_every)
        kit.tell_workers(scheduler, await workers.poll())
        phases.lap("workers")
        # Earlier terms' rows of these dependencies, by dependency (no epoch of its own).
        leftovers = store.outbox.unconfirmed_of
        outbox = kit.outbox(store, publisher, MEMBER_EPOCH, scheduler, lambda: leftovers(owned, started_at))
        async with asyncio.TaskGroup() as group:
            loop = kit.admission_loop(
                running=running,
                scheduler=scheduler,
                session=session,
                publisher=publisher,
                inbox=inbox,
                term=term,
                publishing=group,
                rebuild=lambda: kit.rebuild_in_term(store, set(owned)),
                outbox=outbox,
            )
            consuming, watch = await kit.consume_all(connection, consumers, publisher, group)
            phases.lap("consumers")
            draining = asyncio.Event()

            def on_counts(counts: dict[str, int]) -> None:
                if kit.tell_workers(loop.scheduler, counts):
                    inbox.ready.set()

            group.create_task(workers.run(on_counts, draining), name="worker-watch")
            kit.admitting()
            waited = (
                ""
                if self._last_ended is None
                else f", {phases.started - self._last_ended:.3f} s after the last term ended"
            )
            log.info("member term built in %s%s", phases.summary(), waited)
            log.info(
                "admitting for %s as %s",
                ", ".join(f"{d} (epoch {term.epochs[d]})" for d in owned),
                term.holder,
            )
            group.create_task(self._drain_when(drain, draining, consuming, owned), name="drain")
            group.create_task(outbox.run(draining), name="outbox")
            steering = MemberSteering(
                store=store,
                holder=term.holder,
                epochs=term.epochs,
                inbox=inbox,
                version=running.version,
                seen=kit.steering_seen,
                revived=revived,
                restart=self.lanes.restart,
            )
            group.create_task(steering.run(draining), name="steer")
            await loop.run(draining)
            watch.cancel()
        await workers.close()

    async def _drain_when(
        self, drain: asyncio.Event, draining: asyncio.Event, consuming: list[Consuming], owned: list[str]
    ) -> None:
        """On a change of the owned set or on stop: no new deliveries, finish what was delivered."""
        stopping = asyncio.create_task(self.service.stop.wait())
        drained = asyncio.create_task(drain.wait())
        try:
            await asyncio.wait({stopping, drained}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            drained.cancel()
        if self.service.stop.is_set():
            self.service.health.become(Role.STOPPING)
        self._draining_since = time.monotonic()
        log.info(
            "member term over %s draining: %s",
            ", ".join(owned),
            "stopping" if self.service.stop.is_set() else "the owned set changed",
        )
        await asyncio.gather(*(consumer.cancel() for consumer in consuming), return_exceptions=True)
        draining.set()
