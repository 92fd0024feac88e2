"""The assignment of dependencies to Janus processes (janus/core/assignment.py), over random
views and random histories of joins, graceful leaves, crashes and skewed clocks.

The model's database grants leases exactly as migration 0010's statements do (one row per
dependency; a claim only of an absent, expired or own row, with the epoch + 1; a renewal
only by holder and epoch while unexpired), and the processes act on plans made from views
whose clock may be off by seconds. Checked: one holder per (dependency, epoch), never two
processes acting for one dependency at one instant, and, once membership is stable and the
clocks agree, every dependency owned by one live process, balanced, and nothing changing.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from janus.core.assignment import Lease, Member, View, capacities, live_members, plan, target

LEASE = 3.0  # seconds, as JANUS_LEADER_LEASE
MARGIN = 0.2 * LEASE  # a holder stops acting this much before its lease could expire
STEP = 0.5  # the poll interval: each live process acts once per step

names = st.text(alphabet="abcdefgh", min_size=1, max_size=3)


# -- one view ---------------------------------------------------------------------------------


@st.composite
def views(draw: st.DrawFn) -> View:
    """Members alive or expired; leases live or expired, held by members, dead or unknown."""
    members = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    dependencies = draw(st.lists(names.map(lambda n: f"dep-{n}"), max_size=12, unique=True))
    now = 100.0
    rows = tuple(Member(member=m, expires_at=now + draw(st.sampled_from([-1.0, 2.0]))) for m in members)
    holders = [*members, "gone"]
    leases = tuple(
        Lease(
            dependency=d,
            holder=draw(st.sampled_from(holders)),
            epoch=draw(st.integers(1, 9)),
            expires_at=now + draw(st.sampled_from([-0.5, 1.0, 3.0])),
        )
        for d in dependencies
        if draw(st.booleans())
    )
    return View(now=now, members=rows, leases=leases, dependencies=tuple(dependencies))


def holders_now(view: View) -> dict[str, str]:
    """Each configured dependency's live holder, when that holder is a live member."""
    live = set(live_members(view))
    return {
        lease.dependency: lease.holder
        for lease in view.leases
        if lease.expires_at > view.now and lease.holder in live and lease.dependency in view.dependencies
    }


def fewest_moves(view: View) -> int:
    """The fewest dependencies any balanced placement must move, by brute force over which
    members get the larger shares (independent of how `target` chooses them)."""
    members = live_members(view)
    held = holders_now(view)
    count = {m: sum(1 for h in held.values() if h == m) for m in members}
    base, extra = divmod(len(view.dependencies), len(members))
    kept = max(
        sum(min(count[m], base + (1 if m in larger else 0)) for m in members)
        for larger in itertools.combinations(members, extra)
    )
    return len(view.dependencies) - kept


@given(views())
def test_every_dependency_has_one_live_target_and_loads_differ_by_at_most_one(view: View) -> None:
    placed = target(view)
    members = live_members(view)
    if not members:
        assert placed == {}
        return
    assert set(placed) == set(view.dependencies)
    assert set(placed.values()) <= set(members)
    loads = [sum(1 for m in placed.values() if m == member) for member in members]
    assert max(loads) - min(loads) <= 1


@given(views())
def test_only_orphans_and_excess_move_the_fewest_any_balanced_placement_allows(view: View) -> None:
    if not live_members(view):
        return
    placed = target(view)
    held = holders_now(view)
    moved = sum(1 for dependency, holder in held.items() if placed[dependency] != holder)
    orphans = len(view.dependencies) - len(held)
    assert moved + orphans == fewest_moves(view)


@given(views(), st.randoms(use_true_random=False))
def test_the_target_does_not_depend_on_the_order_of_the_rows(view: View, rng: random.Random) -> None:
    members, leases, dependencies = list(view.members), list(view.leases), list(view.dependencies)
    rng.shuffle(members)
    rng.shuffle(leases)
    rng.shuffle(dependencies)
    shuffled = View(
        now=view.now, members=tuple(members), leases=tuple(leases), dependencies=tuple(dependencies)
    )
    assert target(shuffled) == target(view)


def followed(view: View) -> View:
    """The view after every member did what the target asks: each dependency leased live by it."""
    placed = target(view)
    leases = tuple(
        Lease(dependency=d, holder=m, epoch=1, expires_at=view.now + LEASE) for d, m in placed.items()
    )
    return View(now=view.now, members=view.members, leases=leases, dependencies=view.dependencies)


@given(views())
def test_a_followed_target_is_a_fixed_point_and_every_plan_is_settled(view: View) -> None:
    settled = followed(view)
    assert target(settled) == target(view)
    for member in live_members(view):
        assert plan(settled, member).settled


@given(views(), names)
def test_a_join_moves_only_the_newcomers_share_and_only_to_it(view: View, newcomer: str) -> None:
    settled = followed(view)
    members = live_members(settled)
    if not members or newcomer in {m.member for m in view.members}:
        return
    joined = View(
        now=settled.now,
        members=(*settled.members, Member(member=newcomer, expires_at=settled.now + LEASE)),
        leases=settled.leases,
        dependencies=settled.dependencies,
    )
    before, after = target(settled), target(joined)
    moved = {d for d in before if after[d] != before[d]}
    assert {after[d] for d in moved} <= {newcomer}
    assert len(moved) == len(view.dependencies) // (len(members) + 1)


@given(views(), st.data())
def test_a_leave_moves_only_the_leavers_dependencies(view: View, data: st.DataObject) -> None:
    settled = followed(view)
    members = live_members(settled)
    if len(members) < 2:
        return
    leaver = data.draw(st.sampled_from(members))
    left = View(
        now=settled.now,
        members=tuple(m for m in settled.members if m.member != leaver),
        leases=settled.leases,
        dependencies=settled.dependencies,
    )
    before, after = target(settled), target(left)
    assert {d for d in before if after[d] != before[d]} == {d for d, m in before.items() if m == leaver}


# Table: the capacities of the members (each row: members, what they hold now, D, the shares).
@pytest.mark.parametrize(
    ("members", "held", "dependencies", "expected"),
    [
        (["a", "b", "c"], {}, 6, {"a": 2, "b": 2, "c": 2}),  # even split
        (["a", "b", "c"], {}, 7, {"a": 3, "b": 2, "c": 2}),  # the extra one by name when none holds
        (["a", "b", "c"], {"c": 3}, 7, {"a": 2, "b": 2, "c": 3}),  # the extra one to the holder
        (["a", "b"], {}, 0, {"a": 0, "b": 0}),  # nothing to share
        (["a"], {}, 5, {"a": 5}),  # one process alone leads everything, as today
        ([], {}, 5, {}),  # nobody live: nobody targeted
    ],
)
def test_capacities(
    members: list[str], held: dict[str, int], dependencies: int, expected: dict[str, int]
) -> None:
    assert capacities(members, held, dependencies) == expected


# -- the model: processes acting on plans against a database that grants leases -----------------


@dataclass
class Row:
    holder: str
    epoch: int
    expires_at: float


@dataclass
class Process:
    name: str
    skew: float = 0.0  # how far the clock of the views it plans from is off
    acting: dict[str, tuple[int, float]] = field(default_factory=dict)  # dependency: (epoch, deadline)


@dataclass
class Database:
    dependencies: tuple[str, ...]
    now: float = 0.0
    members: dict[str, float] = field(default_factory=dict)
    leases: dict[str, Row] = field(default_factory=dict)
    terms: dict[tuple[str, int], str] = field(default_factory=dict)  # (dependency, epoch): holder

    def view(self, skew: float) -> View:
        return View(
            now=self.now + skew,
            members=tuple(Member(member=m, expires_at=e) for m, e in self.members.items()),
            leases=tuple(
                Lease(dependency=d, holder=r.holder, epoch=r.epoch, expires_at=r.expires_at)
                for d, r in self.leases.items()
            ),
            dependencies=self.dependencies,
        )

    def claim(self, dependency: str, holder: str) -> int | None:
        row = self.leases.get(dependency)
        if row is not None and row.expires_at > self.now and row.holder != holder:
            return None
        epoch = (row.epoch if row is not None else 0) + 1
        assert (dependency, epoch) not in self.terms, "an epoch of a dependency was reused"
        self.terms[(dependency, epoch)] = holder
        self.leases[dependency] = Row(holder=holder, epoch=epoch, expires_at=self.now + LEASE)
        return epoch

    def renew(self, dependency: str, holder: str, epoch: int) -> bool:
        row = self.leases.get(dependency)
        if row is None or row.holder != holder or row.epoch != epoch or row.expires_at <= self.now:
            return False
        row.expires_at = self.now + LEASE
        return True

    def release(self, dependency: str, holder: str, epoch: int) -> None:
        row = self.leases.get(dependency)
        if row is not None and row.holder == holder and row.epoch == epoch:
            row.expires_at = self.now


def act(db: Database, process: Process) -> None:
    """One poll of one process: heartbeat, plan from its (skewed) view, hand over, claim, renew."""
    db.members[process.name] = db.now + LEASE
    # A dependency whose local deadline passed is no longer acted for (failover.md).
    process.acting = {d: a for d, a in process.acting.items() if a[1] > db.now}
    decided = plan(db.view(process.skew), process.name)
    for dependency in decided.release:
        if dependency in process.acting:
            # Stop admitting, commit, then release: it stops acting before the row is free.
            epoch, _ = process.acting.pop(dependency)
            db.release(dependency, process.name, epoch)
    for dependency in decided.claim:
        epoch = db.claim(dependency, process.name)
        if epoch is not None:
            process.acting[dependency] = (epoch, db.now + LEASE - MARGIN)
    for dependency in decided.keep:
        if dependency in process.acting:
            epoch, _ = process.acting[dependency]
            if db.renew(dependency, process.name, epoch):
                process.acting[dependency] = (epoch, db.now + LEASE - MARGIN)
            else:
                del process.acting[dependency]


def leave(db: Database, process: Process) -> None:
    """SIGTERM: hand everything back, then delete the member row."""
    for dependency, (epoch, _) in process.acting.items():
        db.release(dependency, process.name, epoch)
    process.acting.clear()
    db.members.pop(process.name, None)


def check_one_actor_per_dependency(db: Database, processes: list[Process]) -> None:
    for dependency in db.dependencies:
        actors = [p.name for p in processes if dependency in p.acting and p.acting[dependency][1] > db.now]
        assert len(actors) <= 1, f"{dependency} acted for by {actors} at {db.now}"
        for p in processes:
            if dependency in p.acting:
                epoch = p.acting[dependency][0]
                assert db.terms[(dependency, epoch)] == p.name


operations = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.floats(-2.0, 2.0)),
        st.tuples(st.just("leave"), st.integers(0, 7)),
        st.tuples(st.just("crash"), st.integers(0, 7)),
        st.tuples(st.just("skew"), st.integers(0, 7), st.floats(-2.0, 2.0)),
        st.tuples(st.just("pause"), st.integers(0, 7)),  # one process misses a few polls
        st.tuples(st.just("tick"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 9), operations, st.randoms(use_true_random=False))
def test_random_histories_never_share_a_dependency_and_settle_once_membership_is_stable(
    dependency_count: int, history: list[tuple[object, ...]], rng: random.Random
) -> None:
    db = Database(dependencies=tuple(f"dep-{i}" for i in range(dependency_count)))
    running: list[Process] = [Process(name="p0")]
    paused: dict[str, int] = {}  # name: polls still to miss
    crashed: list[Process] = []  # still acting until their deadlines pass, never polling again
    names_used = itertools.count(1)
    for operation in history:
        kind = operation[0]
        if kind == "join":
            running.append(Process(name=f"p{next(names_used)}", skew=float(operation[1])))
        elif kind in ("leave", "crash", "skew", "pause") and running:
            process = running[int(operation[1]) % len(running)]
            if kind == "leave":
                running.remove(process)
                leave(db, process)
            elif kind == "crash":
                running.remove(process)
                crashed.append(process)
            elif kind == "skew":
                process.skew = float(operation[2])
            else:
                paused[process.name] = 3
        # One poll interval: every running, unpaused process acts once, in a random order.
        db.now += STEP
        for process in rng.sample(running, len(running)):
            if paused.get(process.name, 0) > 0:
                paused[process.name] -= 1
                continue
            act(db, process)
        check_one_actor_per_dependency(db, running + crashed)

    # Stable: nobody joins, leaves, crashes or pauses, and the clocks agree.
    for process in running:
        process.skew = 0.0
    rounds = math.ceil((2 * LEASE) / STEP) + 2 * dependency_count + 4
    for _ in range(rounds):
        db.now += STEP
        for process in running:
            act(db, process)
        check_one_actor_per_dependency(db, running + crashed)
    if not running:
        return
    view = db.view(0.0)
    owners = {d: p.name for p in running for d in p.acting}
    assert set(owners) == set(db.dependencies), "a dependency is not owned once membership is stable"
    loads = [sum(1 for o in owners.values() if o == p.name) for p in running]
    assert max(loads) - min(loads) <= 1
    assert all(plan(view, p.name).settled for p in running)
    # And nothing changes any more.
    db.now += STEP
    for process in running:
        act(db, process)
    assert {d: p.name for p in running for d in p.acting} == owners


def test_a_join_hands_over_without_an_instant_of_two_owners() -> None:
    """Three processes settled on six dependencies; a fourth joins: it waits for each handover
    (the holder releases first), takes its share, and no dependency has two actors meanwhile."""
    db = Database(dependencies=tuple(f"dep-{i}" for i in range(6)))
    processes = [Process(name=n) for n in ("a", "b", "c")]
    for _ in range(6):
        db.now += STEP
        for process in processes:
            act(db, process)
    before = {d: p.name for p in processes for d in p.acting}
    assert len(before) == 6
    processes.append(Process(name="d"))
    waited = False
    for _ in range(4):
        db.now += STEP
        for process in reversed(processes):  # the newcomer plans first: it must wait
            db.members[process.name] = db.now + LEASE
            decided = plan(db.view(0.0), process.name)
            waited = waited or bool(decided.wait)
            act(db, process)
            check_one_actor_per_dependency(db, processes)
    after = {d: p.name for p in processes for d in p.acting}
    moved = {d for d in before if after[d] != before[d]}
    assert waited
    assert len(moved) == 1
    assert {after[d] for d in moved} == {"d"}
