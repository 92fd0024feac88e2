"""The recovery ramp in the core (core/recovery.py), through the scheduler's public API.

Table cases for what starts, restarts and lifts a ramp, and Hypothesis over random policies
and backlogs: during a ramp the cap never shrinks, admissions stay under the ramp's cap and
the configured limits in every window, and no waiting job is left without a wakeup; every
job is admitted in the end.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janus.core.decisions import WaitReason
from janus.core.jobs import Admission
from janus.core.policy import (
    RECOVERY_OFF,
    CircuitPolicy,
    DependencyPolicy,
    FairnessPolicy,
    RateCounting,
    RateLimit,
    RecoveryPolicy,
    RetryPolicy,
)
from janus.core.rebuild import Snapshot
from janus.core.recovery import HISTORY
from janus.core.scheduler import Scheduler

RETRY = RetryPolicy(max_attempts=100, base_delay=0.0, max_delay=0.0, jitter=0.0, budget=1.0)
CIRCUIT = CircuitPolicy(failure_threshold=0.5, min_outcomes=5, window=2.0, open_for=2.0, half_open_probes=1)
STEP = 0.1  # the clock of these tests: a tick every 100 ms


def policy(**changes: object) -> DependencyPolicy:
    fields: dict[str, object] = {
        "name": "api",
        "lease_timeout": 100.0,
        "admission_ttl": 1.0,
        "retry": RETRY,
        "circuit": CIRCUIT,
        "recovery": RecoveryPolicy(ramp=10.0, start=0.1),
    }
    fields.update(changes)
    return DependencyPolicy(**fields)  # type: ignore[arg-type]


class World:
    """A scheduler and a dependency that answers at once: up, or failing every call."""

    def __init__(self, dependency: DependencyPolicy) -> None:
        self.core = Scheduler([dependency], random.Random(7))
        self.now = 0.0
        self.up = True
        self.serial = 0
        self.admitted: list[float] = []  # admission times, in order
        self.waiting_ids: set[str] = set()

    def submit(self, count: int) -> None:
        for _ in range(count):
            self.serial += 1
            job_id = f"j{self.serial}"
            self.core.submit(job_id=job_id, dependency="api", scope="s", payload=None, now=self.now)
            self.waiting_ids.add(job_id)

    def tick(self, arrivals: int = 0) -> list[Admission]:
        self.submit(arrivals)
        decision = self.core.admit(self.now)
        for admission in decision.admissions:
            self.admitted.append(self.now)
            ok = self.up
            self.core.on_result(
                job_id=admission.job_id,
                attempt=admission.attempt,
                success=ok,
                error=None if ok else "down",
                retry_after=None,
                now=self.now,
            )
            if ok:
                self.waiting_ids.discard(admission.job_id)
        return decision.admissions

    def advance(self, seconds: float, arrivals_per_tick: int = 0) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = round(self.now + STEP, 6)
            self.tick(arrivals_per_tick)

    def in_window(self, start: float, end: float) -> int:
        """Admissions at times in [start, end)."""
        return bisect_left(self.admitted, end) - bisect_left(self.admitted, start)

    def after(self, at: float, seconds: float = 1.0) -> int:
        """Admissions at the ticks in [at, at + seconds)."""
        return self.in_window(at - STEP / 2, at + seconds - STEP / 2)

    def circuit_closed_at(self) -> float | None:
        _, events = self.core.drain_gates()
        closed = [event.at for event in events if event.kind == "circuit_closed"]
        return closed[-1] if closed else None


def outage(world: World, *, before: float, down: float, arrivals: int) -> float:
    """`before` s of steady load, then the API down for `down` s: returns when the circuit closed."""
    world.advance(before, arrivals)
    world.up = False
    world.advance(down, arrivals)
    world.up = True
    world.core.drain_gates()
    while (closed := world.circuit_closed_at()) is None:
        world.now = round(world.now + STEP, 6)
        world.tick(arrivals)
    return closed


# -- table cases ------------------------------------------------------------------


def test_after_an_outage_the_first_second_gets_start_x_the_rate_before_and_the_cap_grows() -> None:
    world = World(policy())
    closed = outage(world, before=10.0, down=4.0, arrivals=6)  # 60 jobs/s
    world.advance(1.0, 6)
    first = world.after(closed)
    assert first <= 1 + 6  # the probe that closed it, then 10 % of 60/s
    assert first >= 1 + 5  # and it does admit
    view = world.core.recovery_views()["api"]  # what the share is of: the rate before the outage
    assert view.reference is not None
    assert 55.0 <= view.reference <= 61.0, view
    world.advance(20.0, 6)
    per_second = [world.after(closed + k) for k in range(10)]
    assert per_second == sorted(per_second)  # grows, a step a second
    assert all(
        count <= (k == 0) + math.floor((0.1 + 0.9 * k / 10) * 61) for k, count in enumerate(per_second)
    )
    assert world.core.recovery_shares() == {"api": 1.0}  # lifted once the backlog drained
    assert not world.waiting_ids


def test_without_the_ramp_the_backlog_goes_at_once() -> None:
    world = World(policy(recovery=RECOVERY_OFF))
    closed = outage(world, before=10.0, down=4.0, arrivals=6)
    world.advance(STEP, 6)
    assert world.after(closed + STEP, STEP) > 100  # the whole backlog at the next tick


def test_a_rate_limit_is_the_reference_and_the_ramp_ends_at_it() -> None:
    limit = RateLimit(count=20, window=1.0, counts=RateCounting.ADMISSIONS)
    world = World(policy(rate_limits=(limit,)))
    closed = outage(world, before=3.0, down=4.0, arrivals=3)
    world.advance(0.95, 3)
    assert world.after(closed) <= 1 + 2  # the probe, then 10 % of 20/s
    world.advance(5.0, 3)
    shares = world.core.recovery_shares()["api"]
    assert 0.5 < shares < 0.65  # about 10 % + 90 % x 6/10 of the way
    assert world.core.recovery_views()["api"].reference is None  # the share scales the limit
    world.advance(5.0, 3)
    assert world.core.recovery_shares() == {"api": 1.0}  # at the limit: lifted at ramp's end
    assert world.core.recovery_views() == {}


def test_the_concurrency_limit_ramps_by_the_same_share() -> None:
    wide = RateLimit(count=1000, window=1.0, counts=RateCounting.ADMISSIONS)  # never the one that binds
    dependency = policy(rate_limits=(wide,), concurrency=20, recovery=RecoveryPolicy(ramp=10.0, start=0.25))
    core = Scheduler([dependency], random.Random(1))
    core.submit(job_id="first", dependency="api", scope="s", payload=None, now=0.0)
    assert len(core.admit(0.0).admissions) == 1
    core.on_result(job_id="first", attempt=1, success=False, error="429", retry_after=1.0, now=0.0)
    for k in range(40):
        core.submit(job_id=f"b{k}", dependency="api", scope="s", payload=None, now=0.5)
    assert len(core.admit(2.0).admissions) == 6  # held (no result comes): 25 % + 75 % x 1/10 of 20
    assert core.admit(2.0).admissions == []
    blocks = core.lane_blocks("api", 2.0)
    assert blocks[0].reason is WaitReason.RECOVERING
    assert blocks[0].detail == "recovering: 32 % of capacity, full in 9 s"
    assert blocks[0].until == 3.0  # the next step of the staircase: 7 slots
    assert len(core.admit(11.0).admissions) == 14  # full: 20 held


def test_a_failure_during_the_ramp_opens_the_circuit_again_and_the_ramp_restarts() -> None:
    world = World(policy())
    closed = outage(world, before=10.0, down=4.0, arrivals=6)
    reference = world.core._lanes["api"].gate.ramp.reference
    world.advance(3.0, 6)
    world.up = False
    world.advance(3.0, 6)  # opens again (twice as long)
    assert world.core._lanes["api"].gate.ramp.started is None
    world.up = True
    world.core.drain_gates()
    while (again := world.circuit_closed_at()) is None:
        world.now = round(world.now + STEP, 6)
        world.tick(6)
    assert again > closed
    world.advance(1.0, 6)
    assert world.after(again) <= 1 + 6  # from 10 % again, of the first reference
    assert world.core._lanes["api"].gate.ramp.reference == reference


def test_the_reference_is_the_rate_over_the_history_before_the_outage() -> None:
    world = World(policy())
    world.advance(HISTORY + 20.0, 2)  # 20/s for 50 s: only the last 30 s count
    world.advance(5.0, 8)  # then 80/s for 5 s
    world.up = False
    world.advance(4.0, 8)
    reference = world.core._lanes["api"].gate.ramp.reference
    assert 25.0 < reference < 35.0  # (25 x 20 + 5 x 80) / 30, give or take the buckets


def test_a_takeover_starts_no_ramp_but_an_open_circuit_still_ends_in_one() -> None:
    world = World(policy())
    world.advance(5.0, 6)
    states = world.core.gate_states()
    rebuilt = Scheduler.rebuilt([policy()], Snapshot(gates=states), world.now, random.Random(1))
    assert rebuilt.recovery_shares() == {"api": 1.0}
    for k in range(50):
        rebuilt.submit(job_id=f"n{k}", dependency="api", scope="s", payload=None, now=world.now)
    assert len(rebuilt.admit(world.now).admissions) == 50  # no ramp after a takeover
    # A pause still in force at the takeover ends in a ramp: the new leader measured no rate
    # before it, so the reference is 1 admission a second.
    core = world.core
    core.submit(job_id="p", dependency="api", scope="s", payload=None, now=world.now)
    [paused] = core.admit(world.now).admissions
    core.on_result(
        job_id="p", attempt=paused.attempt, success=False, error="429", retry_after=3.0, now=world.now
    )
    rebuilt = Scheduler.rebuilt([policy()], Snapshot(gates=core.gate_states()), world.now, random.Random(1))
    for k in range(50):
        rebuilt.submit(job_id=f"m{k}", dependency="api", scope="s", payload=None, now=world.now)
    assert rebuilt.admit(world.now + 1.0).admissions == []
    assert len(rebuilt.admit(world.now + 3.0).admissions) == 1
    assert rebuilt.admit(world.now + 3.5).blocked[0].reason is WaitReason.RECOVERING


# -- properties ---------------------------------------------------------------------

LIMITS = st.sampled_from(
    [
        (),
        (RateLimit(count=30, window=1.0, counts=RateCounting.ADMISSIONS),),
        (RateLimit(count=50, window=2.0),),
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limits=LIMITS,
    concurrency=st.none() | st.integers(1, 30),
    ramp=st.sampled_from([1.0, 3.0, 7.5]),
    start=st.sampled_from([0.05, 0.1, 0.5, 1.0]),
    before=st.integers(0, 8),  # jobs per tick before the outage
    backlog=st.integers(0, 400),  # jobs that arrive during the pause
    duration=st.sampled_from([0.05, 0.1, 0.3]),  # how long each call holds its slot
)
def test_a_ramp_is_monotone_within_the_limits_and_strands_nobody(
    limits: tuple[RateLimit, ...],
    concurrency: int | None,
    ramp: float,
    start: float,
    before: int,
    backlog: int,
    duration: float,
) -> None:
    dependency = policy(
        rate_limits=limits, concurrency=concurrency, recovery=RecoveryPolicy(ramp=ramp, start=start)
    )
    core = Scheduler([dependency], random.Random(3))
    lane = core._lanes["api"]
    now, serial = 0.0, 0
    admitted: list[float] = []
    running: list[tuple[float, Admission]] = []  # (finishes at, admission)
    waiting: set[str] = set()

    def submit(count: int) -> None:
        nonlocal serial
        for _ in range(count):
            serial += 1
            core.submit(job_id=f"j{serial}", dependency="api", scope=f"s{serial % 3}", payload=None, now=now)
            waiting.add(f"j{serial}")

    def finish_due(fail_with: float | None = None) -> None:
        for entry in [entry for entry in running if entry[0] <= now]:
            running.remove(entry)
            _, admission = entry
            ok = fail_with is None
            core.on_result(
                job_id=admission.job_id,
                attempt=admission.attempt,
                success=ok,
                error=None if ok else "429",
                retry_after=fail_with,
                now=now,
            )
            if ok:
                waiting.discard(admission.job_id)

    def decide() -> float | None:
        core.expire_leases(now)  # as a tick does: none is due, but their wakeups pass
        decision = core.admit(now)
        for admission in decision.admissions:
            admitted.append(now)
            running.append((now + duration, admission))
        # No busy loop: a decision that admitted nothing does not ask to be called again at once.
        if not decision.admissions and decision.next_wakeup is not None:
            assert decision.next_wakeup > now, (now, decision.blocked)
        return decision.next_wakeup

    # Steady load, then a 429 with retry_after = 1 s and the backlog arriving during the pause.
    for _ in range(30):
        now = round(now + STEP, 6)
        submit(before)
        finish_due()
        decide()
    submit(1)
    while not running:
        now = round(now + STEP, 6)
        decide()
    now = round(now + duration + STEP, 6)
    finish_due(fail_with=1.0)
    assert lane.gate.pause_until is not None
    pause_end = lane.gate.pause_until
    submit(backlog)
    reference = lane.gate.ramp.reference
    last_share, ramp_began = 0.0, None
    horizon = pause_end + 10 * ramp + 120.0 + serial * (duration + STEP)  # one slot: one job at a time
    while (waiting or running or lane.gate.ramp.started is not None) and now < horizon:
        finish_due()
        wakeup = decide()
        view = lane.gate.ramp.view(now)
        began = lane.gate.ramp.started
        if view is not None and began is not None:
            # The 429s may open the circuit too: its closing starts the ramp again, from `start`.
            last_share = 0.0 if began != ramp_began else last_share
            ramp_began = began
            # The cap never shrinks during the ramp, and never goes above the configured limits.
            assert view.share >= last_share
            last_share = view.share
            share = min(1.0, view.share)
            for limit in limits:
                span = limit.admission_window(dependency.admission_ttl)
                in_span = bisect_left(admitted, now + 1e-9) - bisect_left(admitted, now - span + 1e-9)
                assert in_span <= limit.count
                if now - span >= began:  # a window wholly within the ramp
                    assert in_span <= max(1, math.floor(limit.count * share))
            if not limits:
                since = max(now - 1.0 + 1e-9, began)  # the ramp's own admissions
                in_second = bisect_left(admitted, now + 1e-9) - bisect_left(admitted, since)
                assert in_second <= max(1, math.floor(reference * view.share))
            if concurrency is not None:
                assert len(running) <= max(1, math.floor(concurrency * share))
        # Nobody stranded: with jobs waiting and nothing running, the core names a wakeup.
        if lane.eligible and not running:
            assert wakeup is not None
            assert wakeup > now - 1e-9
        due = [at for at, _ in running]
        now = round(min([now + 1.0, *due, *([wakeup] if wakeup is not None else [])]) + 1e-6, 6)
    assert not waiting, f"{len(waiting)} jobs still waiting at {now:.1f} s"
    assert lane.gate.ramp.started is None  # and the ramp was lifted


def test_scopes_share_the_ramped_cap_by_weight() -> None:
    wide = RateLimit(count=40, window=1.0, counts=RateCounting.ADMISSIONS)
    weights = FairnessPolicy(weights={"gold": 3.0})
    core = Scheduler([policy(rate_limits=(wide,), fairness=weights)], random.Random(1))
    core.submit(job_id="first", dependency="api", scope="gold", payload=None, now=0.0)
    assert len(core.admit(0.0).admissions) == 1
    core.on_result(job_id="first", attempt=1, success=False, error="429", retry_after=1.0, now=0.0)
    for k in range(200):
        for scope in ("gold", "free"):
            core.submit(job_id=f"{scope}{k}", dependency="api", scope=scope, payload=None, now=0.5)
    by_scope: dict[str, int] = {"gold": 0, "free": 0}
    now = 1.0
    while now < 6.0:
        for admission in core.admit(now).admissions:
            by_scope[admission.scope] += 1
            core.on_result(
                job_id=admission.job_id,
                attempt=admission.attempt,
                success=True,
                error=None,
                retry_after=None,
                now=now,
            )
        now = round(now + STEP, 6)
    # 4, 7, 11, 14 and 18 admissions a second (10 % of 40, then 9 % more each second): 3 to 1.
    assert sum(by_scope.values()) == 4 + 7 + 11 + 14 + 18
    assert abs(by_scope["gold"] - 3 * by_scope["free"]) <= 4
