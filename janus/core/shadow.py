"""Shadow limits: evaluated on every admission, never enforced (`[dependencies.X.shadow]`).

For each admission the core really makes, each shadow limit says whether it would have held
it back given what was really admitted and held at that instant: its concurrency (the
dependency's held slots, this one included, over the cap), its rate windows (full before this
one), and the same per scope. The windows record every real admission, so that the counts
match a replay of the admissions against the limit. Nothing here is read by a decision.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from janus.core.policy import ShadowLimits
from janus.core.rate import SlidingWindow, admission_windows


class ShadowLane:
    """One dependency's shadow limits, and what they would have held back."""

    def __init__(self, limits: ShadowLimits, admission_ttl: float) -> None:
        self.limits = limits
        self._ttl = admission_ttl
        self.windows = admission_windows(limits.rate_limits, admission_ttl)
        self.scope_windows: dict[str, list[SlidingWindow]] = {}
        self.held_back: Counter[str] = Counter()  # since the last drain (the metric)
        self.total: Counter[str] = Counter()  # in this term (`janus scopes`)

    def _scope(self, scope: str) -> list[SlidingWindow]:
        windows = self.scope_windows.get(scope)
        if windows is None:
            windows = self.scope_windows[scope] = admission_windows(self.limits.scope_rate_limits, self._ttl)
        return windows

    def observe(self, now: float, held: int, scope: str, scope_held: int) -> None:
        """One real admission at `now`; `held` and `scope_held` count it already."""
        limits = self.limits
        if limits.concurrency is not None and held > limits.concurrency:
            self._count(f"concurrency {limits.concurrency}")
        for window in self.windows:
            if window.room(now) <= 0:
                self._count(f"rate {window.limit}")
            window.record(now)
        if limits.scope_concurrency is not None and scope_held > limits.scope_concurrency:
            self._count(f"scope concurrency {limits.scope_concurrency}")
        if limits.scope_rate_limits:
            for window in self._scope(scope):
                if window.room(now) <= 0:
                    self._count(f"scope rate {window.limit}")
                window.record(now)

    def _count(self, limit: str) -> None:
        self.held_back[limit] += 1
        self.total[limit] += 1

    def restore(self, admissions: Iterable[tuple[str, float]]) -> None:
        """The admission history after a rebuild, (scope, admitted_at) in time order."""
        admissions = list(admissions)
        for window in self.windows:
            window.restore([stamp for _, stamp in admissions])
        if self.limits.scope_rate_limits:
            by_scope: dict[str, list[float]] = {}
            for scope, stamp in admissions:
                by_scope.setdefault(scope, []).append(stamp)
            for scope, stamps in by_scope.items():
                for window in self._scope(scope):
                    window.restore(stamps)

    def forget(self, scope: str, now: float) -> None:
        """A scope the lane forgets: its shadow windows too, once they hold nothing that counts."""
        windows = self.scope_windows.get(scope)
        if windows is not None and all(window.clear_at() <= now for window in windows):
            del self.scope_windows[scope]

    def drain(self) -> Counter[str]:
        held_back, self.held_back = self.held_back, Counter()
        return held_back
