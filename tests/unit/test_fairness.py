"""The fair-share bound of docs/fairness.md, over random weights, arrivals, caps and results.

Bound 1 (share): two scopes eligible throughout an interval of a dependency's admissions
get a_i, a_j admissions in it with |a_i/w_i - a_j/w_j| <= 1/w_i + 1/w_j.
Bound 2 (latency): a scope that becomes eligible gets its first admission within n
admissions of the dependency, n = the number of eligible scopes then (itself included).
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from janus.core.decisions import WaitReason
from janus.core.fairness import SCALE, FairQueue, stride
from janus.core.jobs import Job
from janus.core.policy import DependencyPolicy, FairnessPolicy, RateLimit
from janus.core.rebuild import Backlog, Snapshot
from janus.core.scheduler import Scheduler
from tests.unit.simulated_store import page_for

weights = st.sampled_from([0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 10.0])


def worst_share_gap(order: list[str], i: str, j: str, w: dict[str, float]) -> float:
    """max over intervals of |a_i/w_i - a_j/w_j|, in units of 1/weight (strides, as the core counts).

    It is max(D) - min(D) of the running difference D. The bound it is held to is
    1/w_i + 1/w_j, that is stride(w_i) + stride(w_j) in the same units.
    """
    d = 0
    low = high = 0
    for key in order:
        if key == i:
            d += stride(w[i])
        elif key == j:
            d -= stride(w[j])
        low, high = min(low, d), max(high, d)
    return (high - low) / SCALE


def bound(i: str, j: str, w: dict[str, float]) -> float:
    return (stride(w[i]) + stride(w[j])) / SCALE


@settings(max_examples=300, deadline=None)
@given(
    w=st.dictionaries(st.sampled_from("abcdefgh"), weights, min_size=2, max_size=8),
    admissions=st.integers(1, 400),
)
def test_backlogged_scopes_share_by_weight_within_the_bound(w: dict[str, float], admissions: int) -> None:
    queue: FairQueue[str] = FairQueue()
    for key in w:
        queue.activate(key)
    order = []
    for _ in range(admissions):
        key = queue.peek()
        assert key is not None
        queue.serve(key, w[key])
        order.append(key)
    for i in w:
        for j in w:
            if i < j:
                assert worst_share_gap(order, i, j, w) <= bound(i, j, w)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), w=st.dictionaries(st.sampled_from("abcdef"), weights, min_size=2, max_size=6))
def test_bounds_hold_while_scopes_come_and_go(data: st.DataObject, w: dict[str, float]) -> None:
    """Scopes leave (nothing to admit, or at a cap) and come back at random moments."""
    queue: FairQueue[str] = FairQueue()
    order: list[tuple[str, frozenset[str]]] = []  # (served, the scopes eligible just before)

    def serve() -> str:
        head = queue.peek()
        assert head is not None
        order.append((head, frozenset(queue.eligible())))
        queue.serve(head, w[head])
        return head

    for _ in range(data.draw(st.integers(1, 200))):
        action = data.draw(st.sampled_from(["serve", "serve", "serve", "activate", "park"]))
        key = data.draw(st.sampled_from(sorted(w)))
        if action == "activate" and key not in queue:
            remembered = queue.pass_of(key)
            others = {other: queue.pass_of(other) for other in queue.eligible()}
            queue.activate(key)
            if remembered is None or remembered <= queue.virtual_time:
                # Bound 2: idle for a stride or more, or new: served within n admissions.
                limit = len(queue)
            else:
                # Back within a stride of its last admission: it keeps its place (no credit for
                # leaving), so each other scope j may go first at most w_j / w_key times, plus a tie.
                limit = 1 + sum(stride(w[key]) // stride(w[other]) + 1 for other in others)
            for _ in range(limit):
                if serve() == key:
                    break
            else:
                pytest.fail(f"{key} waited more than {limit} admissions")
        elif action == "park":
            queue.park(key)
        elif queue.peek() is not None:
            serve()
    # Bound 1 on every stretch of admissions before which both scopes were eligible.
    for i in w:
        for j in w:
            if i >= j:
                continue
            stretch: list[str] = []
            for served, eligible in [*order, ("", frozenset())]:
                if i in eligible and j in eligible:
                    stretch.append(served)
                    continue
                if stretch:
                    assert worst_share_gap(stretch, i, j, w) <= bound(i, j, w)
                stretch = []


def test_an_idle_scope_earns_no_credit_and_leaving_earns_none_either() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.activate("busy")
    for _ in range(100):
        queue.serve("busy", 1.0)
    # "late" was idle all along: it does not get 100 admissions in a row now.
    queue.activate("late")
    order = []
    for _ in range(10):
        head = queue.peek()
        assert head is not None
        queue.serve(head, 1.0)
        order.append(head)
    assert order.count("late") == 5
    # A scope that leaves right after its turn and comes back starts where it left.
    while queue.peek() != "late":
        queue.serve("busy", 1.0)
    queue.serve("late", 1.0)
    queue.park("late")
    queue.activate("late")
    head = queue.peek()
    assert head == "busy"


def test_weights_3_to_1() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.activate("gold")
    queue.activate("free")
    order = []
    for _ in range(400):
        head = queue.peek()
        assert head is not None
        queue.serve(head, {"gold": 3.0, "free": 1.0}[head])
        order.append(head)
    assert order.count("gold") == 300


def test_only_the_scope_whose_turn_it_is_can_be_served() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.activate("a")
    queue.activate("b")
    with pytest.raises(ValueError, match="turn"):
        queue.serve("b", 1.0)


def test_idle_passes_are_forgotten_once_they_no_longer_matter() -> None:
    queue: FairQueue[str] = FairQueue()
    for key in range(1000):
        queue.activate(str(key))
        queue.serve(str(key), 1.0)
        queue.park(str(key))
    queue.activate("x")
    for _ in range(10):
        queue.serve("x", 1.0)
    assert len(queue._pass) <= 2  # only "x", and at most one idle pass still ahead of V


# -- the scheduler: fair share through real admissions, caps, and results -------------------------


def fair_scheduler(
    *,
    weights: dict[str, float] | None = None,
    default_weight: float = 1.0,
    concurrency: int | None = None,
    rate: tuple[RateLimit, ...] = (),
    scope_concurrency: int | None = None,
    scope_rate: tuple[RateLimit, ...] = (),
    per_scope: tuple[int, int] = (16, 1024),
) -> Scheduler:
    policy = DependencyPolicy(
        name="api",
        concurrency=concurrency,
        rate_limits=rate,
        admission_ttl=30.0,
        lease_timeout=60.0,
        fairness=FairnessPolicy(
            default_weight=default_weight,
            weights=weights or {},
            scope_concurrency=scope_concurrency,
            scope_rate_limits=scope_rate,
        ),
    )
    return Scheduler([policy], random.Random(0), per_scope=per_scope)


def serve_pages(s: Scheduler, store: dict[str, Job]) -> None:
    """The shell's part: read the first attempts the core asks for from the store."""
    for request in s.page_requests():
        page = page_for(request, store.values())
        assert s.load_page(request, page)


def commit(s: Scheduler, store: dict[str, Job]) -> None:
    changes = s.drain_changes()
    for job in [*changes.new, *changes.updated]:
        store[job.job_id] = job


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    w=st.dictionaries(st.sampled_from(["t1", "t2", "t3", "t4"]), weights, min_size=2, max_size=4),
    concurrency=st.integers(1, 6),
    per_scope=st.sampled_from([1, 3, 50]),
)
def test_the_scheduler_shares_a_dependency_by_weight(
    seed: int, w: dict[str, float], concurrency: int, per_scope: int
) -> None:
    """Deep backlogs, random result timings, paging from a store: the share bound holds."""
    s = fair_scheduler(weights=w, concurrency=concurrency, per_scope=(per_scope, per_scope))
    results = random.Random(seed)
    store: dict[str, Job] = {}
    now = 0.0
    count = 0
    for scope in w:
        for _ in range(120):
            count += 1
            s.submit(job_id=f"{scope}-{count}", dependency="api", scope=scope, payload=None, now=now)
    commit(s, store)
    order: list[str] = []
    held: list[tuple[str, int]] = []
    while len(order) < 100:
        serve_pages(s, store)
        decision = s.admit(now)
        for admission in decision.admissions:
            order.append(admission.scope)
            held.append((admission.job_id, admission.attempt))
        commit(s, store)
        # Some held jobs finish, in a random order.
        results.shuffle(held)
        for job_id, attempt in held[: results.randint(0, len(held))]:
            s.on_result(job_id=job_id, attempt=attempt, success=True, error=None, retry_after=None, now=now)
            held.remove((job_id, attempt))
        commit(s, store)
        now += 0.01
    # Every scope had 120 jobs and 100 were admitted in all: all stayed backlogged.
    for i in w:
        for j in w:
            if i < j:
                assert worst_share_gap(order, i, j, w) <= bound(i, j, w)


def test_a_light_tenant_is_not_behind_a_heavy_backlog() -> None:
    s = fair_scheduler(concurrency=1, per_scope=(16, 16))
    store: dict[str, Job] = {}
    for n in range(5000):
        s.submit(job_id=f"heavy-{n}", dependency="api", scope="heavy", payload=None, now=0.0)
    commit(s, store)
    (first,) = s.admit(0.0).admissions
    s.on_result(job_id=first.job_id, attempt=1, success=True, error=None, retry_after=None, now=1.0)
    for n in range(20):
        s.submit(job_id=f"light-{n}", dependency="api", scope="light", payload=None, now=1.0)
    commit(s, store)
    # Both backlogs stay in the store, bar the first 16 of each in memory.
    (stats,) = s.stats()
    assert stats.stored == (5000 - 16) + (20 - 16)
    order = []
    now = 1.0
    while len(order) < 40:
        serve_pages(s, store)
        (admission,) = s.admit(now).admissions
        order.append(admission.scope)
        s.on_result(job_id=admission.job_id, attempt=1, success=True, error=None, retry_after=None, now=now)
        commit(s, store)
        now += 0.001
    # Two eligible scopes: the light tenant's first job goes within 2 admissions, then they alternate.
    assert "light" in order[:2]
    assert order.count("light") == 20


def test_a_scope_at_its_cap_never_blocks_the_others() -> None:
    s = fair_scheduler(concurrency=10, scope_concurrency=2, weights={"big": 10.0})
    for n in range(20):
        s.submit(job_id=f"big-{n}", dependency="api", scope="big", payload=None, now=0.0)
    for n in range(5):
        s.submit(job_id=f"small-{n}", dependency="api", scope="small", payload=None, now=0.0)
    admitted = s.admit(0.0).admissions
    by_scope: dict[str, int] = defaultdict(int)
    for admission in admitted:
        by_scope[admission.scope] += 1
    # "big" has the larger weight but its own cap of 2: "small" takes the rest, up to its cap.
    assert by_scope == {"big": 2, "small": 2}
    why = s.why("big-5", 0.0)
    assert why is not None
    assert why[0].reason is WaitReason.SCOPE_CONCURRENCY
    # A slot of "big" frees: it goes ahead again.
    first_big = next(a for a in admitted if a.scope == "big")
    s.on_result(job_id=first_big.job_id, attempt=1, success=True, error=None, retry_after=None, now=1.0)
    (again,) = s.admit(1.0).admissions
    assert again.scope == "big"


def test_a_scope_rate_limit_holds_and_does_not_stall_the_dependency() -> None:
    s = fair_scheduler(scope_rate=(RateLimit(count=2, window=10.0),))
    for n in range(10):
        s.submit(job_id=f"a-{n}", dependency="api", scope="a", payload=None, now=0.0)
        s.submit(job_id=f"b-{n}", dependency="api", scope="b", payload=None, now=0.0)
    decision = s.admit(0.0)
    assert sorted(a.job_id for a in decision.admissions) == ["a-0", "a-1", "b-0", "b-1"]
    # The limit counts starts: admissions are counted over 10 s + the admission TTL (30 s).
    assert decision.next_wakeup == 40.0
    why = s.why("a-2", 5.0)
    assert why is not None
    assert why[0].reason is WaitReason.SCOPE_RATE
    assert why[0].until == 40.0
    assert len(s.admit(39.999).admissions) == 0
    assert len(s.admit(40.0).admissions) == 4


def test_why_names_the_dependency_limit_and_the_scopes_ahead() -> None:
    s = fair_scheduler(concurrency=1)
    for scope in ("a", "b", "c"):
        for n in range(3):
            s.submit(job_id=f"{scope}-{n}", dependency="api", scope=scope, payload=None, now=0.0)
    (admitted,) = s.admit(0.0).admissions
    assert admitted.job_id == "a-0"
    why = s.why("c-1", 0.0)
    assert why is not None
    reasons = [w.reason for w in why]
    assert reasons == [WaitReason.CONCURRENCY, WaitReason.FAIR_SHARE, WaitReason.QUEUED]
    assert "behind 1 other" in why[1].detail  # b goes before c; a was served and went to the back
    assert "behind 1 earlier" in why[2].detail
    assert s.why("a-0", 0.0) is None  # admitted: not waiting


def test_weights_can_change_on_a_reload() -> None:
    s = fair_scheduler(weights={"a": 1.0, "b": 1.0})
    for n in range(200):
        s.submit(job_id=f"a-{n}", dependency="api", scope="a", payload=None, now=0.0)
        s.submit(job_id=f"b-{n}", dependency="api", scope="b", payload=None, now=0.0)
    first = s.admit(0.0, limit=100).admissions
    assert sum(1 for a in first if a.scope == "a") == 50
    (policy,) = s.policies.values()
    s.update_policy(
        DependencyPolicy(
            name="api", lease_timeout=60.0, fairness=FairnessPolicy(weights={"a": 3.0, "b": 1.0})
        )
    )
    second = s.admit(1.0, limit=100).admissions
    assert abs(sum(1 for a in second if a.scope == "a") - 75) <= 1
    assert policy.fairness.weight("a") == 1.0


def test_pages_are_read_a_bounded_amount_per_tick_in_fair_order() -> None:
    s = fair_scheduler(concurrency=100, per_scope=(4, 4))
    store: dict[str, Job] = {}
    for scope in range(50):
        for n in range(10):
            s.submit(job_id=f"{scope}-{n}", dependency="api", scope=f"s{scope}", payload=None, now=0.0)
    commit(s, store)
    # A new leader: everything is in the store, and all 50 scopes want a page at once.
    backlog = [Backlog(dependency="api", scope=f"s{scope}", waiting=10, max_seq=500) for scope in range(50)]
    rebuilt = Scheduler.rebuilt(
        s.policies.values(), Snapshot(backlog=backlog, max_seq=500), 0.0, random.Random(1), per_scope=(4, 4)
    )
    first = rebuilt.page_requests(max_rows=40)
    assert [r.scope for r in first] == [f"s{n}" for n in range(10)], "10 pages of 4: the budget, in order"
    second = rebuilt.page_requests(max_rows=40)
    assert [r.scope for r in second] == [f"s{n}" for n in range(10, 20)]
    # Nothing is loaded yet: the first scope whose turn comes stalls the lane until its page is in.
    decision = rebuilt.admit(0.0)
    assert decision.admissions == []
    assert decision.blocked[0].reason is WaitReason.PAGING
    stalled = decision.blocked[0].limit
    assert stalled == "reading scope 's0'"
    for request in first:
        page = sorted((j for j in store.values() if j.scope == request.scope), key=lambda j: j.seq)
        assert rebuilt.load_page(request, page[: request.limit])
    assert len(rebuilt.admit(0.0).admissions) > 0
