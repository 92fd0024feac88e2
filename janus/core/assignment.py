"""Which Janus process should lead which dependency (docs/scale-out.md), decided from one view.

Pure: the members, the leases and `now` come from one read of the database (its clock), and
the answer is a value. Every process computes the same target from the same view; safety does
not rest on that agreement (the database grants each lease to one holder at a time), only
convergence does.

The target is a *sticky balanced* placement: loads differ by at most one, a live holder keeps
what it holds up to its share, and only orphans and excess move. Rendezvous weights break the
ties and place the orphans, so the placement is deterministic and needs no ring.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class Member:
    """A process's heartbeat row: live while `expires_at` is after the view's `now`."""

    member: str
    expires_at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Lease:
    """One dependency's lease row: `holder` leads it in `epoch` until `expires_at`."""

    dependency: str
    holder: str
    epoch: int
    expires_at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class View:
    """What one read of the database shows, on its clock."""

    now: float
    members: tuple[Member, ...]
    leases: tuple[Lease, ...]
    dependencies: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """What one member should do with the dependencies, each set sorted by name.

    claim: targeted to it and free (no live lease); release: held by it live, targeted
    elsewhere (hand over: stop admitting, commit, then release); keep: held and targeted
    (renew); wait: targeted to it, still held live by another (its handover or expiry)."""

    claim: tuple[str, ...]
    release: tuple[str, ...]
    keep: tuple[str, ...]
    wait: tuple[str, ...]

    @property
    def settled(self) -> bool:
        return not (self.claim or self.release or self.wait)


_MASK = (1 << 64) - 1


def weight(member: str, dependency: str) -> int:
    """The rendezvous weight: the same on every process and every Python (not `hash()`, which
    is salted per process). FNV-1a over the pair, then splitmix64's finaliser so that names
    differing in one letter get unrelated weights. No hashlib: the core imports no more than it
    needs, and this runs a few hundred times a poll."""
    value = 0xCBF29CE484222325
    for byte in f"{member}\x00{dependency}".encode():
        value = ((value ^ byte) * 0x100000001B3) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def live_members(view: View) -> tuple[str, ...]:
    return tuple(sorted({m.member for m in view.members if m.expires_at > view.now}))


def live_leases(view: View) -> dict[str, Lease]:
    """The unexpired lease of each dependency (the database holds one row per dependency)."""
    return {lease.dependency: lease for lease in view.leases if lease.expires_at > view.now}


def capacities(members: Iterable[str], held: Mapping[str, int], dependencies: int) -> dict[str, int]:
    """Each member's share: ⌊D/N⌋ or ⌈D/N⌉, the larger ones to those holding the most now."""
    ordered = sorted(members, key=lambda m: (-held.get(m, 0), m))
    if not ordered:
        return {}
    base, extra = divmod(dependencies, len(ordered))
    return {m: base + (1 if rank < extra else 0) for rank, m in enumerate(ordered)}


def target(view: View) -> dict[str, str]:
    """The member that should lead each dependency; empty when no member is live."""
    members = live_members(view)
    if not members:
        return {}
    dependencies = sorted(set(view.dependencies))
    holding: dict[str, list[str]] = {m: [] for m in members}
    for dependency, lease in live_leases(view).items():
        if lease.holder in holding and dependency in dependencies:
            holding[lease.holder].append(dependency)
    caps = capacities(members, {m: len(d) for m, d in holding.items()}, len(dependencies))
    placed: dict[str, str] = {}
    for member, held in holding.items():
        # Over its share, a holder keeps the dependencies it weighs most: deterministic.
        for dependency in sorted(held, key=lambda d: (-weight(member, d), d))[: caps[member]]:
            placed[dependency] = member
    load = {m: sum(1 for owner in placed.values() if owner == m) for m in members}
    for dependency in dependencies:
        if dependency in placed:
            continue
        room = [m for m in members if load[m] < caps[m]]
        chosen = max(room, key=lambda m: (weight(m, dependency), m))
        placed[dependency] = chosen
        load[chosen] += 1
    return placed


def plan(view: View, me: str) -> Plan:
    """What `me` should claim, release, keep and wait for, given the view."""
    wanted = target(view)
    leases = live_leases(view)
    claim, release, keep, wait = [], [], [], []
    for dependency in sorted(set(view.dependencies) | set(leases)):
        lease = leases.get(dependency)
        mine = lease is not None and lease.holder == me
        if wanted.get(dependency) == me:
            if mine:
                keep.append(dependency)
            elif lease is None:
                claim.append(dependency)
            else:
                wait.append(dependency)
        elif mine:
            release.append(dependency)
    return Plan(claim=tuple(claim), release=tuple(release), keep=tuple(keep), wait=tuple(wait))
