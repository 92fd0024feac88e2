"""The recovery ramp of one dependency: after an outage, bring it back gradually.

An API that has just recovered is at its most fragile (cold caches, pools refilling,
autoscaling behind): releasing at once everything that waited during the outage is the
classic way to knock it down again. Like Envoy's slow start and load balancers' slow start,
a `Ramp` caps the dependency's admissions for `ramp` seconds after the outage ends (the
circuit closes after being open, a `retry_after` pause ends, or an operator's pause ends:
`DependencyGates.outage_ended`), growing linearly from `start` x the reference rate, in
steps of RAMP_WINDOW (the first second gets `start` exactly):

- with rate limits, each limit's COUNT is scaled by the ramp's share (at least 1 per window),
  so the cap reaches the configured limits at the end of the ramp, where it is lifted;
- without one, the reference is the rate of first attempts admitted over the HISTORY seconds
  before the outage (at least FLOOR_RATE; retries left out: a failing dependency's retries
  are not load it took), capped per RAMP_WINDOW; at the end of the ramp the share
  keeps growing (doubling every third of the ramp) until the cap no longer binds, and only
  then is it lifted, so lifting it releases no burst;
- a concurrency limit is scaled by the same share (at least 1 slot); none configured, none ramped.

A new outage during a ramp stops it and keeps the reference measured before the first one:
the rate during a ramp is not what the dependency handled. The ramp restarts when the new
outage ends. Pure: every call takes `now`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from janus.core.policy import DependencyPolicy
from janus.core.rate import SlidingWindow

RAMP_WINDOW = 1.0  # seconds: without a rate limit, the ramp caps admissions per second
HISTORY = 30.0  # seconds of admissions kept to measure the rate before an outage
FLOOR_RATE = 1.0  # admissions per second: the least reference, so a ramp never starves a backlog
MAX_DOUBLINGS = 40.0  # past the ramp the share stops growing here: enough to unbind any cap


@dataclass(frozen=True, kw_only=True, slots=True)
class RampView:
    """The ramp in force, for operators: `share` of the reference, full (or past) at `full_at`."""

    share: float
    full_at: float
    # Without rate limits, the admissions per second before the outage the share is of (None:
    # the share scales the rate limits' counts).
    reference: float | None = None

    def describe(self, now: float) -> str:
        percent = f"{self.share * 100:.0f} %"
        if now < self.full_at:
            return f"recovering: {percent} of capacity, full in {math.ceil(self.full_at - now - 1e-9):g} s"
        return f"recovering: {percent} of the rate before the outage, lifted when it no longer binds"


class Ramp:
    """One dependency's ramp: the admission history it measures, and the cap while it ramps."""

    def __init__(self, policy: DependencyPolicy) -> None:
        self.policy = policy
        self._history: deque[list[int]] = deque()  # [second, admissions in it], oldest first
        self._first: float | None = None  # the first admission recorded: how long a history is
        self._reference: float | None = None  # admissions/s before the outage (no rate limit)
        self._outage = False  # an outage began and its ramp has not started
        self.started: float | None = None  # the ramp in force began then; None: no ramp
        self._log: deque[float] = deque()  # admissions of the ramp, in its last RAMP_WINDOW

    @property
    def enabled(self) -> bool:
        return self.policy.recovery.ramp > 0

    # -- events ---------------------------------------------------------------

    def record(self, now: float, count: int, retries: int) -> None:
        """`count` admissions at `now`, `retries` of them retries: the history counts first
        attempts only, the load the dependency took, not the retries of its failing calls."""
        second = math.floor(now)
        history = self._history
        if history and history[-1][0] == second:
            history[-1][1] += count - retries
        else:
            history.append([second, count - retries])
            while history[0][0] + HISTORY < now:
                history.popleft()
        if self._first is None:
            self._first = now
        if self.started is not None and not self.policy.rate_limits:
            self._log.extend([now] * count)

    def outage(self, now: float) -> None:
        """The dependency stopped admitting (a circuit opened, a pause began)."""
        if self._outage:
            return
        if self.started is None:
            self._reference = self._measured(now)
        self._outage = True
        self.started = None
        self._log.clear()

    def begin(self, now: float) -> None:
        """The outage ended: ramp from now (if the policy ramps at all)."""
        self._outage = False
        if not self.enabled:
            return
        if self._reference is None:  # no outage seen by this leader: what it measured
            self._reference = self._measured(now)
        self.started = now
        self._log.clear()

    def update_policy(self, policy: DependencyPolicy) -> None:
        self.policy = policy
        if not self.enabled:
            self.started = None

    # -- questions ------------------------------------------------------------

    @property
    def reference(self) -> float:
        """Without a rate limit: the admissions per second the ramp grows from start x of."""
        return self._reference_rate()

    def share(self, now: float) -> float | None:
        """The ramp's share of the reference at `now`; None if no ramp is in force. A ramp with
        rate limits is lifted here once its time is over: the cap is then the limits themselves."""
        started = self.started
        if started is None:
            return None
        recovery = self.policy.recovery
        if now >= started + recovery.ramp:
            if self.policy.rate_limits:
                self.started = None  # at the configured limits: lifted
                return None
            doublings = (now - started - recovery.ramp) / (recovery.ramp / 3.0)
            return float(2.0 ** min(doublings, MAX_DOUBLINGS))
        # A staircase of RAMP_WINDOW steps: the share is constant over each window of the cap,
        # so the first window gets `start` exactly and no window more than its end allows.
        stepped = math.floor(max(0.0, now - started) / RAMP_WINDOW) * RAMP_WINDOW
        return recovery.start + (1.0 - recovery.start) * stepped / recovery.ramp

    def ends_at(self) -> float | None:
        """When the ramp in force reaches its full share (None: no ramp)."""
        return None if self.started is None else self.started + self.policy.recovery.ramp

    def view(self, now: float) -> RampView | None:
        share = self.share(now)
        if share is None or self.started is None:
            return None
        return RampView(
            share=share,
            full_at=self.started + self.policy.recovery.ramp,
            reference=None if self.policy.rate_limits else self._reference_rate(),
        )

    def room(self, now: float, share: float, windows: list[SlidingWindow], held: int) -> int:
        """How many admissions the ramp allows at `now` (given `share`, from `share(now)`)."""
        room = self.rate_room(now, share, windows)
        concurrency = self.policy.concurrency
        if concurrency is not None:
            room = min(room, _scaled(concurrency, share) - held)
        return room

    def rate_room(self, now: float, share: float, windows: list[SlidingWindow]) -> int:
        if windows:
            return min(
                window.room(now) - (window.limit.count - _scaled(window.limit.count, share))
                for window in windows
            )
        log = self._log
        while log and log[0] + RAMP_WINDOW <= now:
            log.popleft()
        return self._rate_cap(share) - len(log)

    def free_at(self, now: float, share: float, windows: list[SlidingWindow], held: int) -> float | None:
        """When the ramp may let one more admission through, by the clock: the rate part frees
        when an admission leaves its window or the share raises the cap by one, the concurrency
        part when the share raises it (or a slot is released: None if only that frees it)."""
        rate_free = now
        if self.rate_room(now, share, windows) <= 0:
            if windows:
                binding = [
                    w for w in windows if w.room(now) - (w.limit.count - _scaled(w.limit.count, share)) <= 0
                ]
                leaves = max(w.free_at(now, _scaled(w.limit.count, share)) for w in binding)
                grows = min(self._grows_at(w.limit.count, share) for w in binding)
            else:
                log = self._log
                leaves = log[max(0, len(log) - self._rate_cap(share))] + RAMP_WINDOW
                grows = self._grows_at(self._reference_rate() * RAMP_WINDOW, share)
            rate_free = min(leaves, grows)
        concurrency = self.policy.concurrency
        free = rate_free
        if concurrency is not None and _scaled(concurrency, share) - held <= 0:
            free = max(free, self._grows_at(concurrency, share))
        return None if math.isinf(free) else max(now, free)

    def settle(self, now: float, share: float, windows: list[SlidingWindow]) -> None:
        """After a decision that was not cut short: past the ramp, a cap that no longer binds
        (room left once every eligible job was admitted, or another limit stopped it) is lifted."""
        started = self.started
        past = started is not None and now >= started + self.policy.recovery.ramp
        if past and self.rate_room(now, share, windows) > 0:
            self.started = None

    # -- internals ------------------------------------------------------------

    def _reference_rate(self) -> float:
        return max(self._reference if self._reference is not None else 0.0, FLOOR_RATE)

    def _rate_cap(self, share: float) -> int:
        return _scaled_float(self._reference_rate() * RAMP_WINDOW, share)

    def _grows_at(self, full: float, share: float) -> float:
        """When `_scaled_float(full, share)` next grows by one (inf if it never does)."""
        started = self.started
        if started is None:
            return math.inf
        target = (math.floor(full * share) + 1 + 1e-9) / full  # just past: the floor does grow
        recovery = self.policy.recovery
        if target <= 1.0:
            linear = recovery.ramp * (target - recovery.start) / (1.0 - recovery.start)
            return min(_step_starts(started, math.ceil(linear / RAMP_WINDOW)), started + recovery.ramp)
        if self.policy.rate_limits:
            return started + recovery.ramp  # lifted then
        return started + recovery.ramp + (recovery.ramp / 3.0) * math.log2(target)

    def _measured(self, now: float) -> float | None:
        """Admissions per second over the HISTORY seconds before `now` (None: none recorded)."""
        if self._first is None:
            return None
        total = sum(count for second, count in self._history if second + HISTORY >= now)
        span = min(HISTORY, max(RAMP_WINDOW, now - self._first))
        return total / span


def _scaled(count: int, share: float) -> int:
    """A configured limit at `share` of it: at least 1, at most the limit."""
    return max(1, min(count, math.floor(count * share)))


def _scaled_float(full: float, share: float) -> int:
    return max(1, math.floor(full * share))


def _step_starts(started: float, steps: int) -> float:
    """The first instant `share` reads step `steps` of the staircase: `started + steps` rounded
    in floating point may read `steps - 1` there, and a wakeup at it would find the ramp unmoved."""
    at = started + steps * RAMP_WINDOW
    while math.floor(max(0.0, at - started) / RAMP_WINDOW) < steps:
        at = math.nextafter(at, math.inf)
    return at
