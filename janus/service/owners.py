"""Who leads which dependency, read from the database every `every` seconds (scale-out,
docs/scale-out.md): for `janus status` and /status ("owners"), for a member's /readyz
(`member_view`) and for the owners metrics, on whatever process answers.

One small statement per read (Membership.owners), on the database's clock; the answers are
built here, on the service's loop, once per read, so the HTTP thread only takes the last one
(an immutable value) and never asks the database itself. A failed read keeps the last
answer, which then ages: /readyz says how old, and a member whose read is stale is not ready.
Started by the service in member mode; a single leader runs none (its /status is unchanged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from janus.api.metrics import Metrics
from janus.core.assignment import plan
from janus.errors import StoreError
from janus.service.health import MemberView
from janus.store.membership import Membership, Owners

log = logging.getLogger("janus.owners")

READ_EVERY = 1.0  # seconds between two reads: cheap (a few rows), and /status refreshes each second


@dataclass(frozen=True, slots=True)
class _Read:
    owners: Owners
    at: float  # monotonic
    picture: dict[str, Any]  # the JSON of /status's "owners", less its age
    share: tuple[str, ...]  # what the assignment targets to this process's member


def picture(owners: Owners, dependencies: tuple[str, ...]) -> dict[str, Any]:
    """/status's "owners": the live members, each dependency's lease, the unowned ones."""
    now = owners.now
    held: dict[str, list[str]] = {}
    for lease in owners.leases:
        if lease.live:
            held.setdefault(lease.holder, []).append(lease.dependency)
    owned = {lease.dependency for lease in owners.leases if lease.live}
    return {
        "as_of": now,  # the database's clock
        "members": [
            {
                "member": m.member,
                "host": m.host,
                "started_at": m.started_at,
                "heartbeat_age_seconds": round(m.heartbeat_age, 3),
                "expires_in_seconds": round(m.expires_at - now, 3),
                "dependencies": sorted(held.get(m.member, [])),
            }
            for m in owners.members
        ],
        "dependencies": [
            {
                "dependency": o.dependency,
                "member": o.holder,
                "host": o.host,
                "epoch": o.epoch,
                "live": o.live,
                "member_live": o.holder_live,
                "since": o.since,
                "lease_left_seconds": round(max(0.0, o.expires_at - now), 3),
            }
            for o in owners.leases
        ],
        "unowned": sorted(set(dependencies) - owned),
    }


class OwnersReader:
    """Reads who leads what, keeps the last answer, and sets the owners metrics. In member mode
    the service runs one beside its member loop:

        reader = OwnersReader(membership, metrics, dependencies, member=member_id,
                              admitting=lambda: service.owned)  # dependency -> epoch admitting
        service.health.member_view = reader.member_view  # /readyz: a member's rule
        StatusBoard(..., owners=reader.status)  # /status, `janus status`, the page
        reading = asyncio.create_task(reader.run(stop))  # every second; sets the gauges
    """

    def __init__(
        self,
        membership: Membership,
        metrics: Metrics,
        dependencies: tuple[str, ...],
        *,
        member: uuid.UUID | None = None,
        admitting: Callable[[], Mapping[str, int]] | None = None,
        every: float = READ_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._membership = membership
        self._metrics = metrics
        self.dependencies = tuple(sorted(dependencies))
        self.member = str(member) if member is not None else None
        self._admitting = admitting
        self.every = every
        self._clock = clock
        self._last: _Read | None = None
        self._owner_series: set[tuple[str, str]] = set()
        self._share_key: tuple[tuple[str, ...], tuple[tuple[str, str], ...]] | None = None
        self._share_value: tuple[str, ...] = ()

    async def read(self) -> Owners:
        """One read: kept for the answers, and the metrics set from it. StoreError if it fails."""
        owners = await self._membership.owners()
        self._last = _Read(owners, self._clock(), picture(owners, self.dependencies), self._share(owners))
        self._set_metrics(owners)
        return owners

    def _share(self, owners: Owners) -> tuple[str, ...]:
        """What the assignment targets to this member. The plan depends only on who is live and
        who holds what live, so it is computed again only when that changes (its rendezvous
        weights are most of a read's CPU)."""
        if self.member is None:
            return ()
        key = (
            tuple(m.member for m in owners.members),
            tuple((o.dependency, o.holder) for o in owners.leases if o.live),
        )
        if key != self._share_key:
            decided = plan(owners.view(self.dependencies), self.member)
            self._share_key, self._share_value = (
                key,
                tuple(sorted((*decided.keep, *decided.claim, *decided.wait))),
            )
        return self._share_value

    def _set_metrics(self, owners: Owners) -> None:
        m = self._metrics
        m.members_live.set(len(owners.members))
        live = {(o.dependency, o.holder) for o in owners.leases if o.live}
        # Series of owners no longer live are removed, not zeroed: one series per dependency.
        for gone in self._owner_series - live:
            with contextlib.suppress(KeyError):
                m.dependency_owner.remove(*gone)
        for dependency, holder in live - self._owner_series:  # the others are 1 already
            m.dependency_owner.labels(dependency=dependency, member=holder).set(1)
        self._owner_series = live
        m.dependencies_unowned.set(len(set(self.dependencies) - {d for d, _ in live}))

    async def run(self, stop: asyncio.Event) -> None:
        """Read every `every` seconds until `stop`; a failed read is logged and retried."""
        while not stop.is_set():
            try:
                await self.read()
            except StoreError as exc:
                log.warning("could not read who leads what: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)

    def status(self) -> dict[str, Any] | None:
        """/status's "owners" (None before the first read); safe from the HTTP thread."""
        last = self._last
        if last is None:
            return None
        # "this_member": the process that answers (None: not a member), marked on the screen.
        return last.picture | {
            "read_seconds_ago": round(self._clock() - last.at, 3),
            "this_member": self.member,
        }

    def member_view(self) -> MemberView | None:
        """This process's member as the last read shows it: Health.member_view."""
        last = self._last
        if last is None or self.member is None:
            return None
        me = next((m for m in last.owners.members if m.member == self.member), None)
        held = {o.dependency: o.epoch for o in last.owners.leases if o.live and o.holder == self.member}
        return MemberView(
            member=self.member,
            read_age=self._clock() - last.at,
            live=me is not None,
            heartbeat_age=me.heartbeat_age if me is not None else None,
            share=last.share,
            held=held,
            admitting=dict(self._admitting()) if self._admitting is not None else None,
        )
