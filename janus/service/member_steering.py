"""Member mode's side of `janus apply`, `pause`, `resume`, `override` and `clear` (service/steer.py
for a single leader): each member term applies the steering of its own dependencies, and marks
those rows applied in a transaction fenced by their leases. A new version of the policy ends the
term: the next one is rebuilt with it (and follows the dependencies it adds or removes). Jobs
`janus jobs retry` revived (by the global holder, global_duties.py) are taken by a rebuild."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

from janus.service.inbox import Control, Inbox
from janus.service.steer import STEER_EVERY, applied, steering_of
from janus.store.repository import Store

log = logging.getLogger("janus.members")


class MemberSteering:
    def __init__(
        self,
        *,
        store: Store,
        holder: uuid.UUID,
        epochs: dict[str, int],
        inbox: Inbox,
        version: int,
        seen: int,
        revived: int,
        restart: Callable[[], None],
    ) -> None:
        self._store = store
        self._holder = holder
        self._epochs = epochs
        self._inbox = inbox
        self._version = version
        self._seen = seen  # the highest steering row the term's rebuild applied
        self._marked = 0  # the highest row up to which this term marked its dependencies' applied
        self._restart = restart
        self._revived = revived  # the newest retry request that revived jobs, before the rebuild

    async def run(self, draining: asyncio.Event) -> None:
        # The version this term was rebuilt with is the one it runs: said at once.
        await self._store.membership.mark_applied(
            self._holder, self._epochs, steering_up_to=None, version=self._version
        )
        while not draining.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(draining.wait(), timeout=STEER_EVERY)
                return
            await self.poll(draining)

    async def poll(self, draining: asyncio.Event) -> None:
        policy_log = self._store.policy_log
        number = await policy_log.newest_version_number()
        if number is not None and number > self._version:
            log.info("version %d of the policy: the member term is rebuilt with it", number)
            self._restart()
            return
        revived = await self._store.membership.revived_up_to()
        if revived > self._revived:
            # `janus jobs retry`: the global holder made dead jobs waiting in PostgreSQL; a
            # rebuild of this term's core takes those of its dependencies.
            if not await self._applied(Control(rebuild=True), draining):
                return
            self._revived = revived
        if not await policy_log.steering_pending():
            return
        top, rows = await policy_log.steering_in_force()
        mine = [row for row in rows if row.dependency in self._epochs]
        fresh = [row for row in mine if row.id > self._seen]
        if fresh:
            # As Steerer: an override's rate limits may count admissions the core does not hold.
            rebuild = any(row.kind == "override" and row.rate_limits is not None for row in fresh)
            control = Control(rebuild=True) if rebuild else Control(steering=steering_of(mine))
            if not await self._applied(control, draining):
                return  # the term ends first: the next one's rebuild applies them
        # Nothing fresh: every row of ours up to `top` is applied (a superseded one by the newer
        # row in force, which would be fresh).
        self._seen = top
        if top > self._marked:
            await self._store.membership.mark_applied(
                self._holder, self._epochs, steering_up_to=top, version=None
            )
            self._marked = top

    async def _applied(self, control: Control, draining: asyncio.Event) -> bool:
        return await applied(self._inbox, control, draining)
