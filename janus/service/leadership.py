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


async def acquire(store: Store, holder: uuid.UUID, timings: LeaseTimings, stop: asyncio.Event) -> Term | None:
    """Stand by until this process leads (a Term) or `stop` is set (None)."""
    announced = False
    while not stop.is_set():
        sent = time.monotonic()
        try:
            epoch = await store.try_acquire(holder, timings.lease)
        except StoreError as exc:
            log.warning("standby: cannot reach the database (%s); retrying", exc)
            epoch = None
        if epoch is not None:
            log.info("leading as %s in epoch %d", holder, epoch)
            return Term(holder=holder, epoch=epoch, trusted_until=sent + timings.lease - timings.margin)
        if not announced:
            log.info("standing by: another process leads")
            announced = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=timings.poll_every)
    return None


async def keep(store: Store, term: Term, timings: LeaseTimings) -> None:
    """Renew the lease until it is lost; raises LeadershipLost then."""
    while True:
        await asyncio.sleep(timings.renew_every)
        sent = time.monotonic()
        try:
            renewed = await asyncio.wait_for(
                store.renew(term.holder, term.epoch, timings.lease), timeout=timings.lease
            )
        except (StoreError, TimeoutError) as exc:
            log.warning("lease renewal failed: %s", exc)
            renewed = None  # unknown: keep trusting only until the old deadline
        if renewed is False:
            raise LeadershipLost(f"another process took the lease from epoch {term.epoch}")
        if renewed:
            term.trusted_until = sent + timings.lease - timings.margin
        if not term.may_act():
            raise LeadershipLost(f"could not renew the lease of epoch {term.epoch} in time")


async def release(store: Store, term: Term) -> None:
    """Hand over at once on a clean stop, instead of making a standby wait for expiry."""
    try:
        await store.release(term.holder, term.epoch)
    except StoreError as exc:
        log.warning("could not release the lease: %s", exc)
