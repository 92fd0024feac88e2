"""Everything that may hold a whole dependency back besides its rate and concurrency limits.

One `DependencyGates` per dependency bundles the Retry-After pause, the circuit breaker,
the retry budget and whether anyone consumes its ready queue (core/workers.py), so that
the scheduler asks one object two questions -- "may anything of this dependency be
admitted now?" (`block`, checked with the lane's own limits) and "may a
retry be admitted now?" (`allows_retry`, the retry budget) -- and tells it what
happened (admissions, outcomes, returns, pauses).
Its state changes come back as values: a `GateState` to persist (a new leader goes on from
it) and `GateEvent`s to log and count.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from janus.core.circuit import CircuitBreaker, CircuitSnapshot, CircuitState
from janus.core.pause import Pause, pause_for
from janus.core.policy import DependencyPolicy
from janus.core.recovery import Ramp
from janus.core.retry_budget import RetryBudget
from janus.core.workers import WorkerPresence

# Module globals read faster than enum members through their class: asked at every decision
# and every result.
_CLOSED, _OPEN = CircuitState.CLOSED, CircuitState.OPEN


class GateReason(StrEnum):
    NO_WORKER = "no_worker"  # nobody consumes the dependency's ready queue
    PAUSED = "paused"  # a worker's retry_after
    CIRCUIT = "circuit"  # open, or half-open with every probe out


@dataclass(frozen=True, kw_only=True, slots=True)
class GateBlock:
    reason: GateReason
    limit: str
    until: float | None  # when the clock alone may lift it; None: an outcome must


@dataclass(frozen=True, kw_only=True, slots=True)
class GateState:
    """What is persisted per dependency, and restored by a new leader."""

    dependency: str
    circuit: CircuitSnapshot
    pause_until: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class GateEvent:
    """A change worth a log line and a metric."""

    dependency: str
    kind: str  # "circuit_<state>", "paused", "retry_after_clamped"
    at: float
    detail: str
    circuit: CircuitSnapshot | None = None  # circuit changes: the state it changed to
    until: float | None = None  # paused: until when


class DependencyGates:
    def __init__(self, policy: DependencyPolicy) -> None:
        self.name = policy.name
        self.policy = policy
        self.budget = RetryBudget(policy.retry)
        self.circuit = CircuitBreaker(policy.circuit)
        self.pause_until: float | None = None
        self.workers = WorkerPresence()  # observed by the shell, never persisted
        self.ramp = Ramp(policy)  # after an outage (core/recovery.py); in memory only
        self._pause_over: float | None = None  # the pause whose end started a ramp
        self._dirty = False
        self._events: list[GateEvent] = []

    def update_policy(self, policy: DependencyPolicy) -> None:
        """A config reload: the ramp follows the new limits (the circuit and budget keep theirs)."""
        self.ramp.update_policy(policy)

    # -- questions ------------------------------------------------------------

    def quiet(self) -> bool:
        """`block`'s own first tests, without the clock: True if it has nothing to say (and no
        effect) now: workers present, no pause, the circuit closed. Asked before `block` on the
        admission step's hot path; a new gate in `block` must be named here too."""
        return self.pause_until is None and self.workers.consumers != 0 and self.circuit.current is _CLOSED

    def block(self, now: float) -> GateBlock | None:
        """Why nothing of this dependency may be admitted at `now`, if so."""
        if self.workers.absent:
            return GateBlock(reason=GateReason.NO_WORKER, limit=self.workers.detail(), until=None)
        if self.pause_until is not None and now >= self.pause_until != self._pause_over:
            self._pause_over = self.pause_until
            if self.circuit.state(now) is CircuitState.CLOSED:  # else the circuit's closing starts it
                self.outage_ended(self.pause_until)
        if self.pause_until is not None and now < self.pause_until:
            return GateBlock(
                reason=GateReason.PAUSED,
                limit="a worker's retry_after",  # until when: `until`, which readers show as they like
                until=self.pause_until,
            )
        if not self.circuit.admits(now):
            state = self.circuit.state(now)
            return GateBlock(
                reason=GateReason.CIRCUIT,
                limit=f"circuit {state.value}",
                until=self.circuit.blocked_until(now),
            )
        return None

    # The retry budget: may a retry be admitted now, and when may one be.

    def allows_retry(self, now: float) -> bool:
        return self.budget.allows_retry(now)

    def retry_free_at(self, now: float) -> float | None:
        return self.budget.free_at(now)

    def record_many(self, now: float, *, admissions: int, retries: int) -> None:
        self.budget.record_many(now, admissions=admissions, retries=retries)

    # -- events ---------------------------------------------------------------

    def on_admit(self, now: float, count: int = 1) -> None:
        """`count` admissions of the dependency at `now` (probes, if the circuit is half-open)."""
        self.circuit.on_admit(now, count)

    def probes_left(self, now: float) -> int | None:
        """How many admissions the circuit allows at `now`; None: no limit (closed)."""
        return self.circuit.probes_left(now)

    def on_outcome(self, *, failed: bool, admitted_at: float | None, now: float) -> None:
        circuit = self.circuit
        if circuit.current is _CLOSED:  # most results: below, knowing `before` is CLOSED
            circuit.record(failed=failed, admitted_at=admitted_at, now=now)
            if circuit.current is not _CLOSED and circuit.state(now) is _OPEN:
                self.outage_began(now)
            return
        before = circuit.state(now)
        circuit.record(failed=failed, admitted_at=admitted_at, now=now)
        after = circuit.state(now)
        if after is CircuitState.OPEN and before is not CircuitState.OPEN:
            self.outage_began(now)
        elif after is CircuitState.CLOSED and before is CircuitState.HALF_OPEN:
            self.outage_ended(now)

    # The recovery ramp's two hooks: a circuit and a `retry_after` pause call them here; an
    # operator's pause of a dependency calls `outage_began` when it holds the dependency and
    # `outage_ended` when it lets it go.

    def outage_began(self, now: float) -> None:
        """The dependency stopped admitting: the rate before now is the ramp's reference."""
        self.ramp.outage(now)

    def outage_ended(self, now: float) -> None:
        """The dependency admits again: the recovery ramp starts."""
        self.ramp.begin(now)

    def on_returned(self, admitted_at: float | None, now: float) -> None:
        self.circuit.on_returned(admitted_at, now)

    def pause(self, retry_after: float | None, now: float) -> Pause | None:
        """A failure said retry_after: pause the whole dependency until then (clamped)."""
        pause = pause_for(self.policy.retry, retry_after, now)
        if pause is None:
            return None
        if pause.clamped:
            self._events.append(
                GateEvent(
                    dependency=self.name,
                    kind="retry_after_clamped",
                    at=now,
                    detail=f"retry_after {pause.requested:g}s clamped to max_retry_after "
                    f"{self.policy.retry.max_retry_after:g}s",
                )
            )
        if self.pause_until is None or pause.until > self.pause_until:
            if self.pause_until is None or self.pause_until <= now:
                self.outage_began(now)
            self.pause_until = pause.until
            self._dirty = True
            self._events.append(
                GateEvent(
                    dependency=self.name,
                    kind="paused",
                    at=now,
                    detail=f"retry_after {min(pause.requested, self.policy.retry.max_retry_after):g}s: "
                    f"nothing admitted for {pause.until - now:g} s",
                    until=pause.until,
                )
            )
        return pause

    def note(self, kind: str, at: float, detail: str) -> None:
        """Something of the lane worth a log line and a count (an operator's pause or override ending)."""
        self._events.append(GateEvent(dependency=self.name, kind=kind, at=at, detail=detail))

    # -- persistence ----------------------------------------------------------

    def drain(self) -> tuple[GateState | None, list[GateEvent]]:
        """The state to persist if it changed since the last drain, and the events since."""
        events, self._events = self._events, []
        for change in self.circuit.drain_changes():
            self._dirty = True
            events.append(
                GateEvent(
                    dependency=self.name,
                    kind=f"circuit_{change.state.value}",
                    at=change.at,
                    detail=change.reason
                    + (
                        f"; admits nothing for {change.snapshot.open_for:g} s"
                        if change.state is CircuitState.OPEN
                        else ""
                    ),
                    circuit=change.snapshot,
                )
            )
        if not self._dirty:
            return None, events
        self._dirty = False
        return self.state(), events

    def state(self) -> GateState:
        return GateState(dependency=self.name, circuit=self.circuit.snapshot(), pause_until=self.pause_until)

    def restore(self, state: GateState, held_admitted_at: list[float], now: float) -> None:
        if self.policy.circuit.enabled:  # a circuit disabled since then stays closed
            self.circuit.restore(state.circuit, held_admitted_at)
        self.pause_until = state.pause_until
        # A takeover starts no ramp of its own (docs/decisions.md), but an outage still going
        # on ends in one; a pause over before `now` is not an outage any more.
        paused = self.pause_until is not None and self.pause_until > now
        if not paused:
            self._pause_over = self.pause_until
        if paused or self.circuit.snapshot().state is not CircuitState.CLOSED:
            self.outage_began(now)
