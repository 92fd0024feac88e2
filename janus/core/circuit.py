"""The circuit breaker of one dependency: stop sending work to a dependency that is down.

closed     every admission allowed; each attempt's outcome (success, failure, lease
           time-out) is kept for `window` seconds. When at least `min_outcomes` are kept
           and failures / outcomes >= `failure_threshold`, the circuit opens.
open       nothing is admitted until `open_until` (= opened + the current open_for).
half_open  from `open_until`: at most `half_open_probes` admissions (the probes). The
           first probe outcome decides: a success closes the circuit (open_for back to its
           base), a failure opens it again with open_for doubled, up to `max_open_for`.

Outcomes of admissions made before the circuit opened are ignored while it is open or
half-open (only probes decide); a probe whose admission came back unused is given back.
An admission is a probe iff it was made while half-open, i.e. `admitted_at >= since`,
which is also how a new leader recognises the probes still held after a takeover.
Jobs wait meanwhile; waiting costs no attempt.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from janus.core.policy import CircuitPolicy


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Module globals read faster than enum members through their class: asked at every result.
_CLOSED, _OPEN = CircuitState.CLOSED, CircuitState.OPEN


@dataclass(frozen=True, kw_only=True, slots=True)
class CircuitSnapshot:
    """What a new leader needs to go on where the last one stopped (persisted per dependency)."""

    state: CircuitState
    since: float  # when this state began (for half_open: open_until)
    open_until: float | None  # open and half_open: when the (last) open period ends
    open_for: float  # the open period in force: base, or grown by re-opens


@dataclass(frozen=True, kw_only=True, slots=True)
class CircuitChange:
    """A state change, to log and count."""

    state: CircuitState
    at: float
    reason: str
    snapshot: CircuitSnapshot


class CircuitBreaker:
    def __init__(self, policy: CircuitPolicy) -> None:
        self.policy = policy
        # The state as last worked out: read it through `state(now)`, except to ask "closed?",
        # which only an outcome changes (the gates ask it at every result).
        self.current = CircuitState.CLOSED
        self._since = float("-inf")
        self._open_until: float | None = None
        self._open_for = policy.open_for
        self._outcomes: deque[tuple[float, bool]] = deque()  # closed only: (learned at, failed)
        self._failures = 0
        self._probes = 0  # half-open: probes admitted (and not given back)
        self._changes: list[CircuitChange] = []

    # -- queries --------------------------------------------------------------

    def state(self, now: float) -> CircuitState:
        if self.current is CircuitState.OPEN:  # only an open circuit changes by the clock
            self._refresh(now)
        return self.current

    def admits(self, now: float) -> bool:
        if self.current is CircuitState.CLOSED:  # the usual answer, without a look at the clock
            return True
        self._refresh(now)
        if self.current is CircuitState.OPEN:
            return False
        return self._probes < self.policy.half_open_probes

    def probes_left(self, now: float) -> int | None:
        """How many more admissions it allows at `now`: None while closed (no limit)."""
        if self.current is CircuitState.CLOSED:
            return None
        self._refresh(now)
        if self.current is CircuitState.OPEN:
            return 0
        return max(0, self.policy.half_open_probes - self._probes)

    def blocked_until(self, now: float) -> float | None:
        """When the clock alone may let an admission through: the end of the open period;
        None while half-open with every probe out (an outcome decides)."""
        self._refresh(now)
        return self._open_until if self.current is CircuitState.OPEN else None

    def snapshot(self) -> CircuitSnapshot:
        return CircuitSnapshot(
            state=self.current, since=self._since, open_until=self._open_until, open_for=self._open_for
        )

    def drain_changes(self) -> list[CircuitChange]:
        changes, self._changes = self._changes, []
        return changes

    # -- events ---------------------------------------------------------------

    def on_admit(self, now: float, count: int = 1) -> None:
        """`count` admissions at `now` (probes, if half-open)."""
        if self.current is CircuitState.CLOSED:
            return
        self._refresh(now)
        if self.current is CircuitState.HALF_OPEN:
            self._probes += count

    def on_returned(self, admitted_at: float | None, now: float) -> None:
        """An admission came back unused: a probe that never ran is given back."""
        self._refresh(now)
        if self._is_probe(admitted_at) and self._probes > 0:
            self._probes -= 1

    def record(self, *, failed: bool, admitted_at: float | None, now: float) -> None:
        """The outcome of an attempt admitted at `admitted_at`, learned at `now`."""
        if not self.policy.enabled:
            return
        if self.current is _OPEN:  # what _refresh changes: skipped for the usual closed
            self._refresh(now)
        if self.current is _CLOSED:
            outcomes = self._outcomes
            outcomes.append((now, failed))
            self._failures += failed
            if outcomes[0][0] + self.policy.window <= now:  # _prune's test: mostly nothing to drop
                self._prune(now)
            kept = len(self._outcomes)
            policy = self.policy
            if kept >= policy.min_outcomes and self._failures >= policy.failure_threshold * kept:
                self._open(now, policy.open_for, f"{self._failures} of {kept} outcomes failed")
        elif self.current is CircuitState.HALF_OPEN and self._is_probe(admitted_at):
            if failed:
                grown = min(self._open_for * 2.0, self.policy.max_open_for)
                self._open(now, grown, "a probe failed")
            else:
                self._change(CircuitState.CLOSED, now, "a probe succeeded")
                self._open_until = None
                self._open_for = self.policy.open_for
        # open, or half-open and not a probe: an attempt from before the circuit opened

    def restore(self, snapshot: CircuitSnapshot, held_admitted_at: list[float]) -> None:
        """Go on from a previous leader's state; `held_admitted_at`: the admissions still held."""
        self.current = snapshot.state
        self._since = snapshot.since
        self._open_until = snapshot.open_until
        self._open_for = snapshot.open_for
        self._outcomes.clear()
        self._failures = 0
        self._probes = sum(1 for at in held_admitted_at if self._is_probe(at))

    # -- internals ------------------------------------------------------------

    def _is_probe(self, admitted_at: float | None) -> bool:
        return (
            self.current is CircuitState.HALF_OPEN and admitted_at is not None and admitted_at >= self._since
        )

    def _refresh(self, now: float) -> None:
        if self.current is CircuitState.OPEN and self._open_until is not None and now >= self._open_until:
            self._probes = 0
            self._change(CircuitState.HALF_OPEN, self._open_until, "open period over: probing")

    def _prune(self, now: float) -> None:
        outcomes, window = self._outcomes, self.policy.window
        while outcomes and outcomes[0][0] + window <= now:
            _, failed = outcomes.popleft()
            self._failures -= failed

    def _open(self, now: float, open_for: float, reason: str) -> None:
        self._open_for = open_for
        self._open_until = now + open_for
        self._outcomes.clear()
        self._failures = 0
        self._change(CircuitState.OPEN, now, reason)

    def _change(self, state: CircuitState, at: float, reason: str) -> None:
        self.current = state
        self._since = at
        self._changes.append(CircuitChange(state=state, at=at, reason=reason, snapshot=self.snapshot()))
