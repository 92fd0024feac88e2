"""The leader lease: at most one process acts on a database at a time.

The lease lives in PostgreSQL (janus.leader) with an epoch that grows on every
change of holder; every leader transaction re-checks it (the fence in
store.leader_transaction). Locally, a leader stops acting a safety margin before
its lease could expire, measuring from when it *sent* the last successful renewal,
so a slow renewal never extends its trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from janus.errors import LeadershipLost, StoreError
from janus.store.repository import Store

log = logging.getLogger("janus.leadership")


@dataclass(frozen=True, kw_only=True, slots=True)
class LeaseTimings:
    lease: float = 3.0  # how long a lease lasts unrenewed (database clock)
    renew_every: float = 0.75  # well below `lease`, so one slow renewal does not lose it
    poll_every: float = 0.5  # how often a standby tries to take over

    @property
    def margin(self) -> float:
        # Stop acting this long before the lease could expire, for clock-rate drift and
        # the time between our check and a commit reaching the database.
        return max(self.lease * 0.2, 0.05)

    def __post_init__(self) -> None:
        if self.renew_every * 2 > self.lease - self.margin:
            raise ValueError("renew_every must be under half of the lease minus its safety margin")


@dataclass(kw_only=True)
class Term:
    holder: uuid.UUID
    epoch: int
    trusted_until: float  # time.monotonic() after which this process must not act

    def may_act(self) -> bool:
        return time.monotonic() < self.trusted_until


async def acquire(
    store: Store,
    holder: uuid.UUID,
    timings: LeaseTimings,
    stop: asyncio.Event,
    on_poll: Callable[[bool], None] = lambda reached: None,
    may_lead: Callable[[], bool] = lambda: True,
) -> Term | None:
    """Stand by until this process leads (a Term), or `stop` is set or `may_lead()` turns false
    (None): a process that could not lead (no broker) must not take the lease from one that can.

    `on_poll(reached)` after every attempt says whether the database answered (readiness).
    """
    announced = False
    unreachable = False
    while not stop.is_set() and may_lead():
        sent = time.monotonic()
        try:
            epoch = await store.try_acquire(holder, timings.lease)
        except StoreError as exc:
            if not unreachable:
                log.warning("standby: cannot reach the database (%s); retrying", exc)
                unreachable = True
            on_poll(False)
            epoch = None
        else:
            if unreachable:
                log.info("standby: the database answers again")
                unreachable = False
            on_poll(True)
        if epoch is not None:
            log.info("leading as %s in epoch %d", holder, epoch)
            return Term(holder=holder, epoch=epoch, trusted_until=sent + timings.lease - timings.margin)
        if not announced and not unreachable:
            log.info("standing by as %s: another process leads", holder)
            announced = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=timings.poll_every)
    return None


async def keep(store: Store, term: Term, timings: LeaseTimings) -> None:
    """Renew the lease until it is lost; raises LeadershipLost then.

    A renewal that gets no answer in time is unknown: the term keeps its old deadline
    (never extended by a slow answer) and ends when that passes, so a slow moment under
    load does not end a term. A renewal that fails outright (the database refused or the
    connection is gone) ends the term at once with StoreError: nothing could be recorded.
    """
    while True:
        await asyncio.sleep(timings.renew_every)
        sent = time.monotonic()
        # Waiting past our own deadline is pointless: by then the term is over anyway.
        patience = max(term.trusted_until - sent, 0.01)
        try:
            renewed: bool | None = await store.renew(term.holder, term.epoch, timings.lease, patience)
        except StoreError as exc:
            if not isinstance(exc.__cause__, TimeoutError):
                raise
            log.warning("lease renewal of epoch %d got no answer in %.2f s", term.epoch, patience)
            renewed = None  # unknown: keep trusting only until the old deadline
        if renewed is False:
            raise LeadershipLost(f"another process took the lease from epoch {term.epoch}")
        if renewed:
            term.trusted_until = sent + timings.lease - timings.margin
        if not term.may_act():
            raise LeadershipLost(f"could not renew the lease of epoch {term.epoch} in time")


async def release(store: Store, term: Term, timeout: float | None = None) -> None:
    """Hand over at once, instead of making a standby wait for expiry: on a clean stop, and
    after a failure (the next term, ours or another's, then starts at once with a new epoch)."""
    try:
        await store.release(term.holder, term.epoch, timeout)
    except StoreError as exc:
        log.warning("could not release the lease of epoch %d: %s", term.epoch, exc)
    else:
        log.info("released the lease of epoch %d", term.epoch)
