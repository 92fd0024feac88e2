"""One dependency's state in the core: its scopes and their queues, its limits and gates, the fair
queue between its scopes, and the jobs it parks, delays and retires.

The admission decision itself (`core/admission.py`) and the scheduler work on these; nothing
outside the core sees them. A scope's own state is `core/scope.py`; the jobs and lease deadlines
every lane shares, `core/ledger.py`.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from janus.core.adaptive import Adaptive, AdaptiveState
from janus.core.circuit import CircuitState
from janus.core.decisions import Blocked, WaitReason
from janus.core.fairness import FairQueue, stride
from janus.core.gates import DependencyGates, GateState
from janus.core.jobs import Job, new_value
from janus.core.ledger import Ledger
from janus.core.paging import Pager
from janus.core.policy import DependencyPolicy
from janus.core.rate import SlidingWindow, admission_windows, rebuild_windows, same_windows
from janus.core.scope import Scope, ScopeCap
from janus.core.shadow import ShadowLane
from janus.core.steering import OperatorPause, Override, Steering
from janus.core.units import UNIT_SCALE, Key, UnitLimits, scaled

_CLOSED = CircuitState.CLOSED
# Module globals read faster than members through their class: once per decision held by them.
_CONCURRENCY, _RATE = WaitReason.CONCURRENCY, WaitReason.RATE
UNLIMITED = 1 << 62  # `Lane.room` when no limit applies: more than any decision admits


@dataclass(kw_only=True, slots=True)
class Lane:
    """Per-dependency state: budgets, scopes, and the fair queue between them."""

    policy: DependencyPolicy  # in force: the policy of record (`base`), with the override if any
    base: DependencyPolicy  # the policy of record (the stored version the leader runs)
    windows: list[SlidingWindow]
    gate: DependencyGates  # Retry-After pause, circuit breaker, retry budget, workers (core/gates.py)
    ledger: Ledger  # shared by every lane of the scheduler
    pager: Pager  # shared by every lane of the scheduler
    held: set[str] = field(default_factory=set)
    scopes: dict[str, Scope] = field(default_factory=dict)
    fair: FairQueue[str] = field(default_factory=FairQueue)
    eligible: int = 0  # jobs eligible now, over all scopes (in memory or stored)
    stored: int = 0  # of which first attempts left in the store
    delayed: list[tuple[float, int, str]] = field(default_factory=list)  # (eligible_at, seq, job)
    rate_parked: list[tuple[float, int, str]] = field(default_factory=list)  # (until, seq, scope)
    # Scopes parked for the retry budget, in the order they parked: they re-enter the fair queue
    # in that order (a set would order them by string hash, which varies between processes).
    retry_parked: dict[str, None] = field(default_factory=dict)
    retiring: list[tuple[float, int, str]] = field(default_factory=list)  # (at, seq, scope)
    # Scopes at a cap of their own (scope concurrency or a scope rate), in the order they parked,
    # and the cap that parked each: a read-out for the time spent at each cap (`janus simulate`).
    capped: dict[str, tuple[WaitReason, str]] = field(default_factory=dict)
    parked: Counter[WaitReason] = field(default_factory=Counter)  # scopes out of `fair`, by reason
    tiebreak: int = 0  # the `seq` of this lane's heap entries: equal times keep their order
    # Operators' steering (core/steering.py). While an override replaces the rate limits, the
    # policy's own windows are `kept` beside the override's, recording every admission, so
    # that the policy's limits count them all again when the override ends.
    operator_pause: OperatorPause | None = None
    override: Override | None = None
    kept: list[SlidingWindow] | None = None
    # No longer in the policy of record: admits nothing, keeps its jobs (`unconfigured`).
    removed: bool = False
    shadow: ShadowLane | None = None  # limits counted, never enforced (core/shadow.py)
    adaptive: Adaptive | None = None  # limits found from the outcomes (core/adaptive.py)
    units: UnitLimits | None = None  # limits in units of cost (core/units.py), if it has any
    # The concurrency block's text, (concurrency, override, text): made once rather than at
    # every decision that finds every slot held (an Override is frozen: the same one, the same text).
    concurrency_text: tuple[int, Override | None, str] | None = None

    @classmethod
    def of(cls, policy: DependencyPolicy, ledger: Ledger, pager: Pager) -> Lane:
        return cls(
            policy=policy,
            base=policy,
            windows=admission_windows(policy.rate_limits, policy.admission_ttl),
            gate=DependencyGates(policy),
            ledger=ledger,
            pager=pager,
            shadow=ShadowLane(policy.shadow, policy.admission_ttl) if policy.shadow is not None else None,
            adaptive=adaptive_of(policy, None),
            units=UnitLimits(policy.unit_limits, policy.admission_ttl) if policy.unit_limits else None,
        )

    def scope(self, name: str) -> Scope:
        """The scope `name`, made (and counted) on first use."""
        found = self.scopes.get(name)
        if found is None:
            fairness = self.policy.fairness
            found = self.scopes[name] = Scope(
                name=name,
                windows=admission_windows(fairness.scope_rate_limits, self.policy.admission_ttl),
                stride=stride(fairness.weight(name)),
            )
            self.pager.scopes += 1
        return found

    def wake(self, scope: Scope) -> None:
        if scope.parked is None and scope.eligible:
            self.fair.activate(scope.name)

    def want_page(self, scope: Scope) -> None:
        """Ask for the scope's next stored first attempts once its in-memory ones run low."""
        pager = self.pager
        if scope.stored and not scope.paging and len(scope.fresh) <= pager.per_scope() // 2:
            pager.wanted[(self.policy.name, scope.name)] = None

    def update_policy(self, policy: DependencyPolicy) -> None:
        """A new policy of record: new limits, weights and caps from the next decision on; the
        windows keep their admissions (an override in force stays on top of it)."""
        self.base = policy
        if self.kept is not None and not same_windows(self.kept, policy.rate_limits, policy.admission_ttl):
            self.kept = rebuild_windows([*self.kept, *self.windows], policy.rate_limits, policy.admission_ttl)
        self._enforce(policy if self.override is None else self.override.applied_to(policy))

    def steer(self, steering: Steering, now: float) -> None:
        """An operator's pause and override as they stand now (what has ended is dropped)."""
        steering = steering.in_force(now)
        was_paused = self.operator_pause is not None
        self.operator_pause = steering.pause
        # An operator's pause is an outage to the recovery ramp, like an open circuit.
        if steering.pause is not None and not was_paused:
            self.gate.outage_began(now)
        elif steering.pause is None and was_paused:
            self.gate.outage_ended(now)
        if steering.override != self.override:
            self._set_override(steering.override)

    def steer_due(self, now: float) -> float | None:
        """Lift the pause and the override whose time has come; when the next one ends, if any."""
        pause, override = self.operator_pause, self.override
        if pause is not None and pause.until is not None and pause.until <= now:
            self.operator_pause = pause = None
            self.gate.note("pause_ended", now, "the operator's pause ended: admitting again")
            self.gate.outage_ended(now)
        if override is not None and override.until <= now:
            self._set_override(None)
            override = None
            self.gate.note("override_ended", now, "the override ended: the policy's limits apply again")
        ends = [
            end
            for end in (pause.until if pause else None, override.until if override else None)
            if end is not None
        ]
        return min(ends, default=None)

    def _set_override(self, override: Override | None) -> None:
        if self.kept is not None:  # the policy's own windows recorded every admission meanwhile
            self.windows, self.kept = self.kept, None
        self.override = override
        policy = self.base
        if override is not None:
            policy = override.applied_to(policy)
            if override.rate_limits is not None:
                self.kept = self.windows
                # New windows, always: the kept ones must not record twice.
                self.windows = rebuild_windows(self.kept, policy.rate_limits, policy.admission_ttl)
        self._enforce(policy)

    def _enforce(self, policy: DependencyPolicy) -> None:
        """The limits in force from the next decision on."""
        ttl = policy.admission_ttl
        if not same_windows(self.windows, policy.rate_limits, ttl):
            self.windows = rebuild_windows([*self.windows, *(self.kept or ())], policy.rate_limits, ttl)
        if self.units is None or not self.units.same(policy.unit_limits, ttl):
            units = self.units or UnitLimits((), ttl)
            self.units = units.rebuilt(policy.unit_limits, ttl) if policy.unit_limits else None
        if (policy.shadow is None) != (self.shadow is None) or (
            self.shadow is not None and self.shadow.limits != policy.shadow
        ):
            self.shadow = None
            if policy.shadow is not None:  # counted from here on, over what the windows still hold
                self.shadow = ShadowLane(policy.shadow, ttl)
                longest = max([*self.windows, *(self.kept or ())], key=lambda w: w.span, default=None)
                if longest is not None:
                    self.shadow.restore(("", stamp) for stamp in longest.stamps())
        # The gates keep the retry and circuit settings they were made with: a new version of
        # the policy reaches them through a rebuild (service/steer.py), which makes them anew.
        self.policy = policy
        self.gate.update_policy(policy)
        self.adaptive = adaptive_of(policy, self.adaptive)
        scope_limits = policy.fairness.scope_rate_limits
        for scope in self.scopes.values():
            scope.stride = stride(policy.fairness.weight(scope.name))
            if not same_windows(scope.windows, scope_limits, ttl):
                scope.windows = rebuild_windows(scope.windows, scope_limits, ttl)
        for scope in list(self.scopes.values()):
            if scope.parked in (WaitReason.SCOPE_CONCURRENCY, WaitReason.SCOPE_RATE):
                self.unpark(scope)  # re-checked against the new caps at its next turn

    # -- rebuilding from the store ---------------------------------------------------

    def restore_backlog(self, name: str, count: int) -> None:
        """`count` first attempts of scope `name` wait in the store."""
        scope = self.scope(name)
        scope.stored += count
        self.stored += count
        self.eligible += count
        self.want_page(scope)
        if scope.parked is WaitReason.RETRY_BUDGET:
            self.unpark(scope)  # the retry budget never holds a first attempt back
        else:
            self.wake(scope)

    def restore_admissions(self, admissions: Iterable[tuple[str, float]]) -> float | None:
        """Reload the admission history, (scope, admitted_at); returns the latest, if any."""
        admissions = sorted(admissions, key=lambda pair: pair[1])
        stamps = [stamp for _, stamp in admissions]
        for window in [*self.windows, *(self.kept or ())]:
            window.restore(stamps)
        if self.policy.fairness.scope_rate_limits:
            by_scope: dict[str, list[float]] = {}
            for scope, stamp in admissions:
                by_scope.setdefault(scope, []).append(stamp)
            for scope, scope_stamps in by_scope.items():
                for window in self.scope(scope).windows:
                    window.restore(scope_stamps)
        if self.shadow is not None:
            self.shadow.restore(admissions)
        return stamps[-1] if stamps else None

    def restore_units(self, charges: Iterable[tuple[str, int, float, float]]) -> None:
        """Reload the unit charges, (job_id, attempt, admitted_at, units): estimates, or the actual
        costs of settled admissions."""
        if self.units is not None:
            listed = [(at, (job_id, attempt), scaled(units)) for job_id, attempt, at, units in charges]
            for window in self.units.windows:
                window.restore(listed)

    def restore_gate(self, state: GateState, now: float) -> None:
        """Go on with a previous leader's circuit and pause (after the held jobs are restored)."""
        jobs = self.ledger.jobs
        held = [job.admitted_at for job_id in self.held if (job := jobs[job_id]).admitted_at is not None]
        self.gate.restore(state, held, now)

    # -- the dependency's own limits ---------------------------------------------

    def block(self, now: float) -> Blocked | None:
        """Which of the dependency's own limits stops every admission at `now`, if one does."""
        found = self.room_or_block(now)
        return found if isinstance(found, Blocked) else None

    def _ramp_block(self, now: float) -> Blocked | None:
        """The recovery ramp, when it stops every admission at `now` (core/recovery.py)."""
        ramp = self.gate.ramp
        if ramp.started is None or (share := ramp.share(now)) is None:
            return None
        if ramp.room(now, share, self.windows, len(self.held)) > 0:
            return None
        view = ramp.view(now)
        return Blocked(
            dependency=self.policy.name,
            reason=WaitReason.RECOVERING,
            limit=view.describe(now) if view is not None else "recovering",
            until=ramp.free_at(now, share, self.windows, len(self.held)),
            waiting=self.eligible,
        )

    def _steered(self, now: float) -> Blocked | None:
        """Removed from the policy, or paused by an operator (`until`: when the pause ends)."""
        pause = self.operator_pause
        if self.removed:
            reason, limit, until = WaitReason.UNCONFIGURED, "removed from the policy of record", None
        elif pause is not None and (pause.until is None or now < pause.until):
            reason, limit, until = WaitReason.PAUSED, f"paused by {pause.by}", pause.until
        else:
            return None
        return Blocked(
            dependency=self.policy.name, reason=reason, limit=limit, until=until, waiting=self.eligible
        )

    def overridden_by(self) -> str:
        """ " (overridden by WHO until T)" while an override is in force, for the limits it sets."""
        override = self.override
        return "" if override is None else f" (overridden by {override.by})"

    def room(self, now: float) -> int:
        """How many admissions the dependency's own limits allow at `now`, where `block` is None:
        concurrency, every rate window, and the probes of a half-open circuit (UNLIMITED if none).

        The admission works this out once and then admits that many without asking `block`
        again: nothing but its own admissions changes these limits within one decision."""
        room = UNLIMITED
        concurrency = self.policy.concurrency
        if concurrency is not None:
            room = concurrency - len(self.held)
        for window in self.windows:
            room = min(room, window.room(now))
        probes = self.gate.probes_left(now)
        if probes is not None:
            room = min(room, probes)
        if self.adaptive is not None:
            room = min(room, self.adaptive.room(now, len(self.held)))
        ramp = self.gate.ramp
        if ramp.started is not None and (share := ramp.share(now)) is not None:
            room = min(room, ramp.room(now, share, self.windows, len(self.held)))
        return room

    def room_or_block(self, now: float) -> int | Blocked:
        """`block` and then `room` in one pass over the limits, as the admission asks them: what
        stops every admission at `now`, else how many the limits allow. Same answers, same
        order of the checks that have side effects (pruning, a circuit's or a ramp's clock)."""
        policy = self.policy
        if self.removed or self.operator_pause is not None:
            steered = self._steered(now)
            if steered is not None:
                return steered
        gate, circuit = self.gate, self.gate.circuit
        if not gate.quiet() and (stop := gate.block(now)) is not None:
            return Blocked(
                dependency=policy.name,
                reason=WaitReason(stop.reason.value),
                limit=stop.limit,
                until=stop.until,
                waiting=self.eligible,
            )
        held = len(self.held)
        room = UNLIMITED
        concurrency = policy.concurrency
        if concurrency is not None:
            room = concurrency - held
            if room <= 0:  # positional: most decisions of a busy dependency end here
                text = self.concurrency_text
                if text is None or text[0] != concurrency or text[1] is not self.override:
                    text = self.concurrency_text = (
                        concurrency,
                        self.override,
                        f"concurrency {concurrency}{self.overridden_by()}",
                    )
                return new_value(
                    Blocked,
                    (
                        policy.name,
                        _CONCURRENCY,
                        text[2],
                        None,  # until: a slot is freed by an event, not by the clock
                        self.eligible,
                    ),
                )
        for window in self.windows:
            window_room = window.room(now)
            if window_room <= 0:
                return new_value(
                    Blocked,
                    (
                        policy.name,
                        _RATE,
                        f"rate {window.limit}{self.overridden_by()}",
                        window.free_at(now),  # until
                        self.eligible,
                    ),
                )
            if window_room < room:
                room = window_room
        adaptive = self.adaptive
        if adaptive is not None and (found := adaptive.blocking(policy.name, held, self.eligible, now)):
            return found
        if self.units is not None and (full := self.units.blocking(now)) is not None:
            return Blocked(
                dependency=policy.name,
                reason=WaitReason.RATE,
                limit=f"rate {full.limit}",
                until=self.units.free_at(now, self.units.stopped or 0),
                waiting=self.eligible,
            )
        ramp = gate.ramp
        if ramp.started is not None and (share := ramp.share(now)) is not None:
            ramp_room = ramp.room(now, share, self.windows, held)
            if ramp_room <= 0:
                return self._ramp_block(now) or ramp_room  # it blocks: the same look says how
            room = min(room, ramp_room)
        if circuit.current is not _CLOSED:  # probes_left's own test: None (no limit) while closed
            probes = circuit.probes_left(now)
            if probes is not None and probes < room:
                room = probes
        if adaptive is not None:
            room = min(room, adaptive.room(now, held))
        return room

    def settle_ramp(self, now: float) -> None:
        """After a decision not cut short by its budget: past its time, a ramp that no longer
        binds is lifted (core/recovery.py)."""
        ramp = self.gate.ramp
        if ramp.started is not None and (share := ramp.share(now)) is not None:
            ramp.settle(now, share, self.windows)

    def record_admissions(self, now: float, count: int, retries: int) -> None:
        """Tell the dependency's rate windows, retry budget and circuit about `count` admissions
        at `now` (`retries` of them retries): the admission records them in batches (see `room`)."""
        for window in self.windows:
            window.record_many(now, count)
        if self.kept is not None:
            for window in self.kept:
                window.record_many(now, count)
                window.room(now)  # pruned here: nothing else asks the kept windows
        gate = self.gate  # its parts told directly: one call each rather than two (the hot path)
        gate.budget.record_many(now, admissions=count, retries=retries)
        circuit = gate.circuit
        if circuit.current is not _CLOSED:  # on_admit's own test, asked first
            circuit.on_admit(now, count)
        gate.ramp.record(now, count, retries)
        if self.adaptive is not None:
            self.adaptive.record(now, count, len(self.held))

    def drain_adaptive(self) -> AdaptiveState | None:
        return self.adaptive.drain() if self.adaptive is not None else None

    def charge_units(self, scope: Scope, key: Key, cost: float, now: float) -> int | None:
        """Charge an admission's estimate in every unit window, and return the fair-share step it
        costs its scope (its stride per unit); None if it does not fit now (then `block` says so)."""
        units, need = self.units, scaled(cost)
        if units is None:
            return scope.stride
        if not units.fits(now, need):
            units.stopped = need
            return None
        units.stopped = None
        units.charge(now, key, need)
        step = max(1, scope.stride * need // UNIT_SCALE) + scope.unit_debt
        scope.unit_debt = min(0, step - 1)  # what a step of 1 leaves owed back
        return max(1, step)

    def settle_units(self, job: Job, actual: float) -> None:
        """The actual cost of the job's current admission: charged in place of its estimate, and
        its scope's fair share corrected by the difference from its next turn on."""
        if self.units is None:
            return
        delta = self.units.settle((job.job_id, job.attempt), scaled(actual))
        scope = self.scopes.get(job.scope)
        if delta and scope is not None:
            scope.unit_debt += scope.stride * delta // UNIT_SCALE

    def trim(self, job: Job, started_by: float) -> None:
        """The job's admission started its call by `started_by`: its place in every window that
        counts starts ends T after that (core/rate.py). Before `settle_units` (it forgets keys)."""
        at = job.admitted_at
        if at is None:
            return
        for window in self.windows:
            window.trim(at, started_by)
        if self.kept:
            for window in self.kept:
                window.trim(at, started_by)
        scope = self.scopes.get(job.scope)
        if scope is not None and scope.windows:
            for window in scope.windows:
                window.trim(at, started_by)
        shadow = self.shadow  # the shadow limits too, so that one equal to a real limit holds back nothing
        if shadow is not None:
            for window in [*shadow.windows, *shadow.scope_windows.get(job.scope, ())]:
                window.trim(at, started_by)
        if self.units is not None:
            self.units.trim((job.job_id, job.attempt), started_by)

    def scope_cap(self, scope: Scope, now: float) -> ScopeCap | None:
        """The scope's own cap that stops it now: (reason, limit, until)."""
        cap = self.policy.fairness.scope_concurrency
        if cap is not None and scope.held >= cap:
            return WaitReason.SCOPE_CONCURRENCY, f"scope concurrency {cap}", None
        for window in scope.windows:
            if window.room(now) <= 0:
                return WaitReason.SCOPE_RATE, f"scope rate {window.limit}", window.free_at(now)
        return None

    # -- scopes in and out of the fair queue --------------------------------------

    def next_job(self, scope: Scope, now: float) -> str | None:
        """The scope's job to admit next: the one eligible first, retries only within budget."""
        fresh, again, jobs = scope.fresh, scope.again, self.ledger.jobs
        if again:
            head = jobs[again[0]]
            retry_ok = head.failures == 0 or self.gate.allows_retry(now)
            if retry_ok and (not fresh or head.eligible_at <= jobs[fresh[0]].eligible_at):
                if scope.stored and not fresh:
                    return None  # the stored first attempts may have become eligible earlier
                again.popleft()
                return head.job_id
        if fresh:
            return fresh.popleft()
        return None

    def park(self, scope: Scope, reason: WaitReason, until: float | None, limit: str = "") -> None:
        """Out of the fair queue: at a cap of its own (`limit` names it), or for the retry budget."""
        scope.parked = reason
        self.parked[reason] += 1
        self.fair.park(scope.name)
        if reason is WaitReason.RETRY_BUDGET:
            self.retry_parked[scope.name] = None
            return
        self.capped[scope.name] = (reason, limit)
        if reason is WaitReason.SCOPE_RATE and until is not None:
            self.tiebreak += 1
            heapq.heappush(self.rate_parked, (until, self.tiebreak, scope.name))

    def unpark(self, scope: Scope) -> None:
        if scope.parked is WaitReason.RETRY_BUDGET:
            self.retry_parked.pop(scope.name, None)
        elif self.capped:
            self.capped.pop(scope.name, None)
        if scope.parked is not None:
            self.parked[scope.parked] -= 1
        scope.parked = None
        self.wake(scope)

    def unpark_if_below_cap(self, scope: Scope) -> None:
        if scope.parked is WaitReason.SCOPE_CONCURRENCY:
            cap = self.policy.fairness.scope_concurrency
            if cap is None or scope.held < cap:
                self.unpark(scope)

    def delay(self, scope: Scope, job: Job) -> None:
        """A retry waits for its backoff (`eligible_at`)."""
        self.tiebreak += 1
        scope.delayed += 1
        heapq.heappush(self.delayed, (job.eligible_at, self.tiebreak, job.job_id))

    def release_due(self, now: float) -> None:
        """Backoffs that ended and scope caps that lifted by `now`: back in the fair queue."""
        delayed, jobs = self.delayed, self.ledger.jobs
        while delayed and delayed[0][0] <= now:
            _, _, job_id = heapq.heappop(delayed)
            scope = self.scopes[jobs[job_id].scope]
            scope.delayed -= 1
            scope.add_again(job_id)
            self.eligible += 1
            self.wake(scope)
        parked = self.rate_parked
        while parked and parked[0][0] <= now:
            _, _, name = heapq.heappop(parked)
            capped = self.scopes.get(name)
            if capped is not None and capped.parked is WaitReason.SCOPE_RATE:
                self.unpark(capped)
        if self.retry_parked and self.gate.allows_retry(now):
            for name in list(self.retry_parked):
                self.unpark(self.scopes[name])

    def oldest(self, scope: Scope) -> float | None:
        """eligible_at of the scope's oldest eligible job in memory."""
        jobs = self.ledger.jobs
        heads = [jobs[queue[0]].eligible_at for queue in (scope.fresh, scope.again) if queue]
        return min(heads, default=None)

    # -- forgetting empty scopes ----------------------------------------------------

    def maybe_retire(self, scope: Scope) -> None:
        """Forget an empty scope once its own rate windows are clear (its fair-share pass is kept)."""
        if not scope.empty or scope.parked is not None:
            return
        clear_at = max((window.clear_at() for window in scope.windows), default=float("-inf"))
        self.tiebreak += 1
        heapq.heappush(self.retiring, (clear_at, self.tiebreak, scope.name))

    def retire_due(self, now: float) -> None:
        retiring = self.retiring
        while retiring and retiring[0][0] <= now:
            _, _, name = heapq.heappop(retiring)
            scope = self.scopes.get(name)
            if scope is None or not scope.empty or scope.parked is not None or name in self.fair:
                continue
            if any(window.clear_at() > now for window in scope.windows):
                continue  # admitted again since it was queued here; queued again when it empties
            del self.scopes[name]
            self.pager.scopes -= 1
            if self.shadow is not None:
                self.shadow.forget(name, now)


def adaptive_of(policy: DependencyPolicy, adaptive: Adaptive | None) -> Adaptive | None:
    """The lane's adaptive limits under `policy`: kept (within its new bounds), made, or dropped."""
    wanted = policy.adaptive
    if wanted is None or not (wanted.adapts_rate or wanted.adapts_concurrency):
        return None
    if adaptive is None:
        return Adaptive(policy, 0.0)  # round 0 ends with the first results
    adaptive.update_policy(policy, 0.0)
    return adaptive
