"""One process's side of scale-out (docs/scale-out.md): heartbeat its member row, plan from one
view of the database, hand over what moves away, claim what comes to it, renew what it keeps,
and stop acting for a dependency at its local deadline. What "acting" means (rebuilding a lane,
admitting, draining it) is the `Lanes` it drives: `janus run`'s member mode (service/member_mode.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from janus.core.assignment import Plan, plan
from janus.store.membership import Membership

log = logging.getLogger("janus.members")


class Lanes(Protocol):
    """What the member loop drives, per dependency."""

    async def gained(self, dependency: str, epoch: int) -> None:
        """The lease is ours in `epoch`: rebuild the dependency from PostgreSQL, then admit."""

    async def handover(self, dependency: str) -> None:
        """Stop admitting, let the last tick commit and the publishes be confirmed: the lease
        is released only after this returns."""

    def lost(self, dependency: str) -> None:
        """The lease is gone (not renewed, or its local deadline passed): stop at once."""


@dataclass(frozen=True, kw_only=True, slots=True)
class MemberTimings:
    lease: float = 3.0  # a member row and a dependency lease last this long unrenewed
    poll_every: float = 0.5  # heartbeat, view, plan and renew, once each
    margin: float = 0.2  # of the lease: stop acting this much before it could expire

    def __post_init__(self) -> None:
        # As LeaseTimings: one slow poll must not lose a lease.
        if self.poll_every * 2 > self.lease * (1 - self.margin):
            raise ValueError("poll_every must be under half of the lease minus its margin")


@dataclass(frozen=True, kw_only=True, slots=True)
class Owned:
    epoch: int
    deadline: float  # monotonic: act only before this


class MemberLoop:
    def __init__(
        self,
        membership: Membership,
        dependencies: tuple[str, ...],
        lanes: Lanes,
        *,
        member: uuid.UUID | None = None,
        host: str | None = None,
        timings: MemberTimings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.member = member or uuid.uuid4()
        self._membership = membership
        self._dependencies = dependencies
        self._lanes = lanes
        self._host = host
        self.timings = timings or MemberTimings()
        self._clock = clock
        self.owned: dict[str, Owned] = {}

    def follow(self, dependencies: tuple[str, ...]) -> None:
        """A new version of the policy: plan over these dependencies from the next poll on (one
        no longer among them is handed over by the plan: nothing targets it any more)."""
        self._dependencies = dependencies

    @property
    def dependencies(self) -> tuple[str, ...]:
        return self._dependencies

    def _deadline(self, sent: float) -> float:
        return sent + self.timings.lease * (1 - self.timings.margin)

    def _expire(self) -> None:
        """A dependency whose local deadline passed is no longer acted for (failover.md)."""
        now = self._clock()
        for dependency in [d for d, o in self.owned.items() if o.deadline <= now]:
            del self.owned[dependency]
            log.warning("lease of %s ran out locally; stopping", dependency)
            self._lanes.lost(dependency)

    async def poll(self) -> Plan:
        """One poll: heartbeat, view, plan; hand over, claim, renew. The plan it followed."""
        await self._membership.heartbeat(self.member, self._host, self.timings.lease)
        self._expire()
        decided = plan(await self._membership.view(self._dependencies), str(self.member))
        # Renew first: a handover (a drain) may take a while, and must not cost the leases kept;
        # the ones handed over are renewed too, so that their drain has a whole lease to commit in.
        await self._renew([d for d in (*decided.keep, *decided.release) if d in self.owned])
        for dependency in decided.release:
            await self._hand_over(dependency)
        for dependency in decided.claim:
            if dependency in self.owned:
                # Our lease ran out on the database before our local deadline (its clock ran
                # ahead of ours): that term is over, whatever we take now is a new one.
                del self.owned[dependency]
                self._lanes.lost(dependency)
            sent = self._clock()
            epoch = await self._membership.claim(dependency, self.member, self.timings.lease)
            if epoch is not None:
                self.owned[dependency] = Owned(epoch=epoch, deadline=self._deadline(sent))
                log.info("leading %s in epoch %d as %s", dependency, epoch, self.member)
                await self._lanes.gained(dependency, epoch)
        return decided

    async def _renew(self, keep: list[str]) -> None:
        if not keep:
            return
        sent = self._clock()
        epochs = {d: self.owned[d].epoch for d in keep}
        renewed = await self._membership.renew(self.member, epochs, self.timings.lease)
        for dependency in keep:
            if dependency in renewed:
                self.owned[dependency] = Owned(epoch=epochs[dependency], deadline=self._deadline(sent))
            else:
                del self.owned[dependency]
                log.warning("lost the lease of %s", dependency)
                self._lanes.lost(dependency)

    async def _hand_over(self, dependency: str) -> None:
        owned = self.owned.get(dependency)
        if owned is None:
            return
        # Still ours while it drains: its last tick commits under the lease, then it is released.
        await self._lanes.handover(dependency)
        self.owned.pop(dependency, None)
        await self._membership.release(dependency, self.member, owned.epoch)
        log.info("handed %s over (epoch %d)", dependency, owned.epoch)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop`, then hand everything over and leave."""
        while not stop.is_set():
            await self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.timings.poll_every)
        await self.leave()

    async def leave(self) -> None:
        for dependency in sorted(self.owned):
            await self._hand_over(dependency)
        await self._membership.leave(self.member)
