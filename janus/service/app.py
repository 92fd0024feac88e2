"""Wiring and supervision: connect, stand by and lead (leader_mode.py, or member_mode.py with
[scale_out]), recover, drain on SIGTERM. What a term does in either mode: term_kit.py.

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
import logging
import random
import signal
import time
import uuid
from typing import Any

from janus.api.changes import RecentChanges
from janus.api.metrics import Metrics
from janus.broker import connection as broker
from janus.config import JanusConfig
from janus.core.backoff import retry_delay
from janus.policy_record import record_of
from janus.service.gc_pauses import GcPauseObserver
from janus.service.health import Health, Role
from janus.service.inspect import Inspector
from janus.service.leader_mode import PRUNE_EVERY, REVIVE_EVERY, LeaderMode
from janus.service.member_mode import MemberMode
from janus.service.observe import loop_lag_forever
from janus.service.options import ServiceOptions
from janus.service.owners import OwnersReader
from janus.service.steer import Running
from janus.service.term_kit import (
    PREFETCH,
    PREFETCH_BYTES,
    RECOVERABLE,
    RESULTS_PREFETCH,
    TermKit,
    cause_of,
    leaves_of,
    prefetch,
)

# Defined where both modes' terms use them; importable from here as before.
__all__ = [
    "PREFETCH",
    "PREFETCH_BYTES",
    "PRUNE_EVERY",
    "RECOVERABLE",
    "RESULTS_PREFETCH",
    "REVIVE_EVERY",
    "Service",
    "install_signal_handlers",
    "prefetch",
]

log = logging.getLogger("janus.service")


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
        self._rng = random.Random()
        self.kit = TermKit(self)  # what either mode's terms do, and the state that outlives a term
        self.record = record_of(config)  # the policy of the file, as a stored version says it
        self.running: Running | None = None  # the stored version this process runs while it leads
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
        return time.time() + self.kit.clock_offset

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
            self.kit.failures += 1
            delay = retry_delay(self.options.reconnect, self.kit.failures, self._rng)
            leaves = leaves_of(failure)
            self.health.become(Role.RECOVERING, detail=str(leaves[0]))
            self.metrics.recovering.set(1)
            log.warning(
                "lost the %s (%s); reconnecting in %.2f s",
                cause_of(failure),
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
        store = await self.kit.connect_store()
        clean = False
        probe: broker.Connection | None = None
        leader: LeaderMode | None = None
        try:
            applied = await store.migrate()
            if applied:
                log.info("applied migrations %s", applied)
            # Held while standing by: a process that cannot reach the broker must not take the
            # lease (a new epoch for nothing) from a standby that can. Terms use their own.
            probe = await self.kit.connect_broker("probe")
            if self.config.scale_out.enabled:
                self.member = MemberMode(self, store)
                try:
                    await self.member.run()
                finally:
                    self.member = None
            leader = LeaderMode(self, store)
            await leader.run(probe)
            clean = True
        finally:
            if leader is not None:
                store = leader.store  # stepping down replaced it
            if probe is not None:
                await broker.close(probe)
            if clean:
                await store.close()
            else:
                store.terminate()

    async def who_leads(self) -> dict[str, Any] | None:
        """Who holds the lease, as the database tells it: a standby's answer to `janus status`."""
        store = self.kit.store
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


def install_signal_handlers(service: Service) -> None:
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        if not service.stop.is_set():
            log.info("%s received: stopping", sig.name)
        service.stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
