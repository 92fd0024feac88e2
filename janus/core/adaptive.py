"""Adaptive limits of one dependency: its real capacity, found from the outcomes of its calls.

Two controllers, each moving at most once per *round* (docs/decisions.md, "Adaptive limits"):

- **Rate: AIMD on throttle signals** (TCP Reno, RFC 5681). A throttled result (the dependency
  said "slow down": 429, 503, a quota error, a `retry_after`) multiplies the rate by `decrease`;
  a round of clean results while the rate was in use adds a step. Until the first throttle the
  rate doubles per round (TCP's slow start), so an unknown capacity is found in a few rounds.
  A round starts at each change and lasts at least `window`: only results of calls admitted
  after the round began may end it. This is what naive AIMD misses (Helidon #9542 cut the
  limit by 10 % on *every* slow sample): the throttles of calls made under the old rate say
  nothing about the new one, so one burst of throttles costs one decrease, not one each.
- **Concurrency: a latency gradient** (Netflix concurrency-limits Gradient2 and Vegas, Envoy's
  adaptive concurrency filter). Per round, the mean duration of its calls (`short`) against a
  no-load floor (`floor`: the least round mean seen, drifting up slowly so a lasting change of
  the dependency is followed): while short stays near the floor the limit grows (if it was in
  use): in slow start by x1.5 or sqrt(limit), until the first round whose latency leaves the
  floor's band (Vegas), then by a fifth of sqrt(limit); above tolerance x floor it shrinks by
  tolerance x floor / short (at most halved).

Both are bounded by min and max, and by the static limits (hard ceilings), and the rate is
enforced as a token bucket whose burst is a quarter second of it: a steady backlog is paced,
not released in one burst per window. Pure: every call takes `now`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from janus.core.decisions import Blocked, WaitReason
from janus.core.policy import AdaptivePolicy, DependencyPolicy

BURST = 0.25  # seconds of the adaptive rate the token bucket holds at most (at least 1 call)
FLOOR_DRIFT = 0.002  # per round: how slowly the latency floor follows a lasting rise
INITIAL_RATE = 10.0  # calls per second before slow start, like TCP's initial window (RFC 6928)
SMOOTHING = 0.2  # Gradient2's: each round moves the concurrency a fifth of the way to its target
HOLD = 0.5  # the concurrency grows below 1 + HOLD x (tolerance - 1) times its floor, holds above
SLOW_START_GROWTH = 1.5  # the concurrency's slow start, per clean round (small limits)
USED = 0.5  # a limit is "in use" if the round used at least this share of it (else no growth)


class Signal(StrEnum):
    """What moved an adaptive limit last: a bounded label for metrics."""

    THROTTLED = "throttled"  # a throttled result lowered the rate
    CLEAN = "clean"  # a clean round raised the rate
    LATENCY_RISE = "latency_rise"  # latency above tolerance x its floor lowered the concurrency
    LATENCY_FLOOR = "latency_floor"  # latency near its floor raised the concurrency


@dataclass(frozen=True, kw_only=True, slots=True)
class AdaptiveState:
    """What is persisted per dependency, and restored by a new leader."""

    dependency: str
    rate: float | None  # calls per second; None: rate adaptation off
    concurrency: float | None
    slow_start: bool
    reason: str  # the signal that moved them last, for operators
    changed_at: float  # when they last moved
    signal: Signal | None = None  # the same, as the metric's label
    concurrency_slow_start: bool = True  # the concurrency's own: off once latency left its floor
    latency_floor: float | None = None  # seconds: the concurrency's no-load floor


@dataclass(frozen=True, kw_only=True, slots=True)
class AdaptiveView:
    """The limits in force, for operators (`janus status`, `janus why`, metrics)."""

    rate: float | None
    concurrency: int | None
    reason: str
    changed_at: float
    signal: Signal | None = None

    def describe_rate(self, now: float) -> str:
        return f"adaptive rate {_per_second(self.rate or 0.0)}{self._since(now)}"

    def describe_concurrency(self, now: float) -> str:
        return f"adaptive concurrency {self.concurrency}{self._since(now)}"

    def _since(self, now: float) -> str:
        if not self.reason:
            return ""
        verb, _, cause = self.reason.partition(" ")  # "lowered 2 s ago after 3 throttled results"
        return f", {verb} {max(0.0, now - self.changed_at):.0f} s ago {cause}"


def _per_second(rate: float) -> str:
    return f"{rate:.3g}/1s" if rate < 10 else f"{rate:.0f}/1s"


class AdaptiveRate:
    """AIMD on throttle signals, enforced as a token bucket."""

    def __init__(self, policy: AdaptivePolicy, ceiling: float, now: float) -> None:
        self.policy = policy
        self.ceiling = ceiling
        self.rate = self.bounded(policy.initial_rate if policy.initial_rate is not None else INITIAL_RATE)
        self.slow_start = True
        self.round_start = now  # results of calls admitted before this end no round
        self.evidence_from = now  # throttles of calls admitted before this lower nothing
        self.changed_at = now
        self.reason = ""
        self.signal: Signal | None = None
        self._lowered = False  # the last change was a decrease
        self._answered = 0  # throttled results that decrease answered
        self._clean = 0
        self._tainted = False  # a throttle of a call admitted in the round, not acted on
        self._admitted = 0  # in the round
        self._step = policy.increase * self.rate
        self._tokens = self._burst()
        self._filled_at = now

    def bounded(self, rate: float) -> float:
        return max(self.policy.min_rate, min(rate, self.top))

    @property
    def top(self) -> float:
        """The most the rate may reach: max_rate, or a static rate limit below it."""
        return min(self.policy.max_rate or math.inf, self.ceiling)

    def _burst(self) -> float:
        return max(1.0, self.rate * BURST)

    # -- signals --------------------------------------------------------------

    def observe(self, *, admitted_at: float, throttled: bool, now: float) -> bool:
        """One result of a call admitted at `admitted_at`. True if the rate changed."""
        if admitted_at < (self.evidence_from if throttled else self.round_start):
            # Made under the previous rate: no evidence about this one. A throttle here is one
            # more the last decrease answered (said, not acted on).
            if throttled and self._lowered:
                self._answered += 1
                self.reason = f"lowered after {self._answered} throttled results"
            # Nor is a round with a throttle of its own calls clean: no increase at its end.
            self._tainted |= throttled and admitted_at >= self.round_start
            return False
        if throttled:
            before = self.rate
            # Leaving slow start, the last clean rate is half this one (TCP's ssthresh = flight / 2).
            self._change(self.rate * (0.5 if self.slow_start else self.policy.decrease), now)
            self.slow_start = False
            self._step = self.policy.increase * before
            self._lowered, self._answered = True, 1
            # The dependency's own window still counts calls made at the old rate for about
            # `window`: throttles of calls made meanwhile say nothing about the new rate.
            self.evidence_from = now + self.policy.window
            self.reason, self.signal = "lowered after 1 throttled result", Signal.THROTTLED
            return True
        self._clean += 1
        return self._maybe_increase(now)

    def _maybe_increase(self, now: float) -> bool:
        if now < self.round_start + self.policy.window or self._clean == 0:
            return False
        if self._tainted:
            self._new_round(now)
            return False
        elapsed = now - self.round_start
        if self._admitted < USED * self.rate * elapsed or self.rate >= self.top:
            # Not limited by the rate (too few jobs, or another limit): no evidence it could be higher.
            self._new_round(now)
            return False
        if self.slow_start:
            self._change(self.rate * 2.0, now)
            self.reason, self.signal = "raised (slow start) after a clean round", Signal.CLEAN
        else:
            self._change(self.rate + max(self._step, 1.0 / self.policy.window), now)
            self.reason, self.signal = "raised after a clean round", Signal.CLEAN
        return True

    def _change(self, rate: float, now: float) -> None:
        self._lowered = False
        self.rate = self.bounded(rate)
        self.changed_at = now
        self._tokens = min(self._tokens, self._burst())
        self._new_round(now)

    def _new_round(self, now: float) -> None:
        self.round_start = self.evidence_from = now
        self._clean = self._admitted = 0
        self._tainted = False

    def begin(self, now: float, last_admitted: float | None) -> None:
        """Adaptation starts at `now` for a dependency that may have run without it: results
        of calls admitted before say nothing about this rate, and while the dependency's own
        window still counts calls made under the static limits (about `window` after the last
        one), its throttles say nothing either (as after a decrease)."""
        self.round_start = self.changed_at = now
        recent = last_admitted is not None and last_admitted > now - self.policy.window
        self.evidence_from = now + self.policy.window if recent else now

    def restore(self, rate: float, slow_start: bool, now: float) -> None:
        self.rate = self.bounded(rate)
        self.slow_start = slow_start
        self._step = self.policy.increase * self.rate
        self._tokens = min(self._tokens, self._burst())
        self._new_round(now)

    # -- the bucket -------------------------------------------------------------

    def _refill(self, now: float) -> None:
        if now > self._filled_at:
            self._tokens = min(self._burst(), self._tokens + (now - self._filled_at) * self.rate)
            self._filled_at = now

    def room(self, now: float) -> int:
        self._refill(now)
        return math.floor(self._tokens + 1e-9)

    def record(self, now: float, count: int) -> None:
        self._refill(now)
        self._tokens -= count
        self._admitted += count

    def free_at(self, now: float) -> float:
        self._refill(now)
        return now + max(0.0, 1.0 - self._tokens) / self.rate


class AdaptiveConcurrency:
    """A latency gradient: grows while calls take about their no-load time, shrinks as they slow."""

    def __init__(self, policy: AdaptivePolicy, ceiling: float, now: float) -> None:
        self.policy = policy
        self.ceiling = ceiling
        start = (
            policy.initial_concurrency if policy.initial_concurrency is not None else policy.min_concurrency
        )
        self.limit = self.bounded(float(start))
        self.floor: float | None = None
        self.slow_start = True
        self.round_start = now
        self.changed_at = now
        self.reason = ""
        self.signal: Signal | None = None
        self._sum = 0.0
        self._samples = 0
        self._peak = 0  # the most calls held in the round
        self.floor_at = now  # when the floor was last measured afresh
        self.measuring = False  # a round at min_concurrency, to take the floor again

    def bounded(self, limit: float) -> float:
        top = min(float(self.policy.max_concurrency or math.inf), self.ceiling)
        return max(float(self.policy.min_concurrency), min(limit, top))

    @property
    def cap(self) -> int:
        if self.measuring:
            return max(1, min(math.floor(self.limit), self.policy.min_concurrency))
        return max(1, math.floor(self.limit))

    def held(self, count: int) -> None:
        self._peak = max(self._peak, count)

    def observe(self, *, admitted_at: float, duration: float, now: float) -> bool:
        """One call's duration. True if the limit changed."""
        if admitted_at < self.round_start:
            return False
        self._sum += duration
        self._samples += 1
        # A round needs the calls of half the limit: the first to report are those admitted when
        # fewer were in flight, and a round of those alone would say the new limit is fine.
        # In slow start, the calls of the whole limit: a step must be seen in full.
        share = 0.0 if self.measuring else 1.0 if self.slow_start else USED
        needed = max(self.policy.min_samples, math.ceil(self.limit * share))
        if now < self.round_start + self.policy.window or self._samples < needed:
            return False
        if self.measuring:
            return self._end_measure(self._sum / self._samples, now)
        return self._end_round(self._sum / self._samples, now)

    def _end_measure(self, short: float, now: float) -> bool:
        """The floor taken afresh from calls made at min_concurrency (Envoy's minRTT
        recalculation): followed down by any round, a baseline that rose is followed up only
        here, within floor_interval and one round. The limit in force comes back as it was."""
        self.floor, self.floor_at = short, now
        self.measuring = False
        self._next_round(now)
        return True  # the floor is persisted with the limits

    def _next_round(self, now: float) -> None:
        self.round_start = now
        self._sum, self._samples = 0.0, 0
        self._peak = 0
        interval = self.policy.floor_interval
        if interval > 0 and self.floor is not None and now >= self.floor_at + interval:
            self.measuring = True

    def _step(self) -> float:
        """How much a round near the floor adds. In slow start x1.5 up to 4 calls, then sqrt(limit)
        (at least one call): a doubling could land at twice a steep knee, where calls take many
        times their floor; this lands at most sqrt(knee) past it. After slow start, Gradient2's
        smoothing: a fifth of sqrt(limit)."""
        if self.slow_start:
            return max(1.0, min(self.limit * (SLOW_START_GROWTH - 1.0), math.sqrt(self.limit)))
        return SMOOTHING * math.sqrt(self.limit)

    def _end_round(self, short: float, now: float) -> bool:
        floor = self.floor
        if floor is None or short < floor:
            self.floor = floor = short  # not a measurement: its round may have queued
        else:
            self.floor = floor = floor + (short - floor) * FLOOR_DRIFT
        before = self.limit
        tolerance = self.policy.tolerance
        # Vegas's band: grow below the middle of the tolerance, shrink above it, hold between,
        # so that a steady latency does not make the limit swing around the knee.
        grow_below = 1.0 + (tolerance - 1.0) * HOLD
        if floor <= 0 or short <= tolerance * floor:
            if short > grow_below * floor:
                # Vegas leaves slow start at the first round whose latency leaves the floor's band,
                # not at the first decrease: the next step of a slow start would cross the knee.
                self.slow_start = False
            elif self._peak >= USED * self.limit:
                self.limit = self.bounded(self.limit + self._step())
                reason, signal = "raised with latency near its floor", Signal.LATENCY_FLOOR
        else:
            # Down at once (at most halved), up in small steps: a round lasts a second or more,
            # and a limit left too high for several rounds is what makes the p99.
            self.limit = self.bounded(self.limit * max(0.5, tolerance * floor / short))
            self.slow_start = False
            reason, signal = f"lowered as latency reached {short / floor:.1f}x its floor", Signal.LATENCY_RISE
        self._next_round(now)
        if self.limit != before:
            self.changed_at = now
            self.reason, self.signal = reason, signal
            return True
        return False


class Adaptive:
    """One dependency's adaptive limits (rate, concurrency, or both), as the lane asks and tells them."""

    def __init__(self, policy: DependencyPolicy, now: float) -> None:
        self.name = policy.name
        self.rate: AdaptiveRate | None = None
        self.concurrency: AdaptiveConcurrency | None = None
        self._dirty = False
        self.update_policy(policy, now)

    def update_policy(self, policy: DependencyPolicy, now: float) -> None:
        """New bounds (a reload, an override, a policy applied): the limits in force are clamped
        to them; a part turned on starts afresh, a part turned off is dropped."""
        adaptive = policy.adaptive
        if adaptive is None or not adaptive.adapts_rate:
            self.rate = None
        elif self.rate is None:
            self.rate = AdaptiveRate(adaptive, rate_ceiling(policy), now)
        else:
            self.rate.policy, self.rate.ceiling = adaptive, rate_ceiling(policy)
            self.rate.rate = self.rate.bounded(self.rate.rate)
        ceiling = float(policy.concurrency or math.inf)
        if adaptive is None or not adaptive.adapts_concurrency:
            self.concurrency = None
        elif self.concurrency is None:
            self.concurrency = AdaptiveConcurrency(adaptive, ceiling, now)
        else:
            self.concurrency.policy, self.concurrency.ceiling = adaptive, ceiling
            self.concurrency.limit = self.concurrency.bounded(self.concurrency.limit)

    @property
    def active(self) -> bool:
        return self.rate is not None or self.concurrency is not None

    # -- signals ----------------------------------------------------------------

    def observe(
        self, *, admitted_at: float | None, throttled: bool, duration: float | None, now: float
    ) -> None:
        if admitted_at is None:
            return
        changed = False
        if self.rate is not None:
            changed = self.rate.observe(admitted_at=admitted_at, throttled=throttled, now=now)
        if self.concurrency is not None and duration is not None and not throttled:
            # A refused call's time is not the time of the work.
            changed |= self.concurrency.observe(admitted_at=admitted_at, duration=duration, now=now)
        self._dirty |= changed

    def record(self, now: float, count: int, held: int) -> None:
        if self.rate is not None:
            self.rate.record(now, count)
        if self.concurrency is not None:
            self.concurrency.held(held)

    # -- questions --------------------------------------------------------------

    def room(self, now: float, held: int) -> int:
        room = self.rate.room(now) if self.rate is not None else 1 << 62
        if self.concurrency is not None:
            room = min(room, self.concurrency.cap - held)
        return room

    def blocking(self, dependency: str, held: int, waiting: int, now: float) -> Blocked | None:
        """What stops every admission of the dependency at `now`, if the adaptive limits do:
        the concurrency found (with `held` slots taken), then the rate found."""
        view = self.view()
        if self.concurrency is not None and held >= self.concurrency.cap:
            reason, limit, until = WaitReason.CONCURRENCY, view.describe_concurrency(now), None
        elif self.rate is not None and self.rate.room(now) <= 0:
            reason, limit, until = WaitReason.RATE, view.describe_rate(now), self.rate.free_at(now)
        else:
            return None
        return Blocked(dependency=dependency, reason=reason, limit=limit, until=until, waiting=waiting)

    def view(self) -> AdaptiveView:
        rate, concurrency = self.rate, self.concurrency
        parts: list[AdaptiveRate | AdaptiveConcurrency] = [p for p in (rate, concurrency) if p is not None]
        latest = max(parts, key=lambda part: part.changed_at)
        return AdaptiveView(
            rate=rate.rate if rate is not None else None,
            concurrency=concurrency.cap if concurrency is not None else None,
            reason=latest.reason,
            changed_at=latest.changed_at,
            signal=latest.signal,
        )

    # -- persistence ------------------------------------------------------------

    def state(self) -> AdaptiveState:
        view = self.view()
        return AdaptiveState(
            dependency=self.name,
            rate=self.rate.rate if self.rate is not None else None,
            concurrency=self.concurrency.limit if self.concurrency is not None else None,
            slow_start=self.rate.slow_start if self.rate is not None else True,
            reason=view.reason,
            changed_at=view.changed_at,
            signal=view.signal,
            concurrency_slow_start=self.concurrency.slow_start if self.concurrency is not None else True,
            latency_floor=self.concurrency.floor if self.concurrency is not None else None,
        )

    def drain(self) -> AdaptiveState | None:
        """The state to persist if it changed since the last drain."""
        if not self._dirty:
            return None
        self._dirty = False
        return self.state()

    def begin(self, now: float, last_admitted: float | None) -> None:
        """A term starts at `now`: a rate with no limits of record (adaptation just turned on,
        or never persisted; `restore` follows where there are) starts afresh, on evidence of
        its own calls only."""
        if self.rate is not None:
            self.rate.begin(now, last_admitted)

    def restore(self, state: AdaptiveState, now: float) -> None:
        """Go on from a previous leader's limits (clamped to the bounds in force)."""
        if self.rate is not None and state.rate is not None:
            self.rate.restore(state.rate, state.slow_start, now)
            self.rate.reason, self.rate.changed_at = state.reason, state.changed_at
            self.rate.signal = state.signal
        if self.concurrency is not None and state.concurrency is not None:
            part = self.concurrency
            part.limit = part.bounded(state.concurrency)
            part.round_start = part.floor_at = now
            part.slow_start, part.floor = state.concurrency_slow_start, state.latency_floor
            part.reason, part.changed_at = state.reason, state.changed_at
            part.signal = state.signal


def rate_ceiling(policy: DependencyPolicy) -> float:
    """The static rate limits as a rate per second: the adaptive rate never goes above them."""
    return min((limit.count / limit.window for limit in policy.rate_limits), default=math.inf)
