"""When the simulation may apply results without the admission step, and the counts that tell it.

A tick of the service applies results and then runs `Scheduler.admit`. Most results of a
simulated run reach a dependency that could not admit anything at that instant (its rate
window is full, or nothing of it waits), and the step costs as much as the rest of the run:
`SkipRule` says when it can be left out without changing any decision, and keeps the counts
it needs (jobs waiting per dependency, the backoff ends still ahead).

Exact for any number of dependencies: the step is left out only when every dependency it
would look at is unchanged since the last step except by the clock, and every change the
clock makes was announced by that step as a wakeup. A wakeup the core announced for the
same instant without making progress (a limit said "free now" and still held) is not a
promise kept, so after such a step nothing is skipped until the next one
(`SkipRule.ticked`).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from janus.core.decisions import Blocked, WaitReason
from janus.core.jobs import Admission
from janus.core.paging import MAX_PER_SCOPE, MEMORY_BUDGET
from janus.core.policy import DependencyPolicy

_CLOCK_ONLY = frozenset({WaitReason.PAUSED})  # not RATE: a result's duration frees a window early
# Limits that a new job cannot lift: an arrival at a dependency held by one of these, before the
# time it frees by the clock, waits as it would after the admission step.
_FULL = frozenset({WaitReason.PAUSED, WaitReason.RATE, WaitReason.CONCURRENCY})
# Limits whose `Blocked` reads the same at every instant until a wakeup or the lane's own event
# lifts it (a recovering ramp's text names its share, which grows by the clock).
_STEADY_BLOCKS = frozenset({WaitReason.RATE, WaitReason.PAUSED, WaitReason.CONCURRENCY, WaitReason.CIRCUIT})
# Up to this many scopes the core keeps the same number of first attempts in memory per scope.
_CONSTANT_SHARE_SCOPES = MEMORY_BUDGET // MAX_PER_SCOPE
_NONE: frozenset[str] = frozenset()  # no dependency held, none arriving: no set built per question

# admission, failed, error, retry_after, the actual cost reported (None: none), the call's duration
Result = tuple[Admission, bool, str | None, float | None, float | None, float]


class SkipRule:
    """The driver's bookkeeping for `skips`: it tells the rule what it feeds the core."""

    __slots__ = (
        "_all_rated",
        "_backoff",
        "_clock_only",
        "_costed",
        "_full",
        "_plain",
        "_single",
        "_stalled",
        "_steady",
        "scopes",
        "untracked",
        "waiting",
    )

    def __init__(self, policies: Sequence[DependencyPolicy]) -> None:
        # Per dependency: jobs waiting for an admission (eligible, or in a retry's backoff), and
        # the backoff ends still ahead; not counted any more once a lease ran out in the core
        # (its late success may cancel a retry).
        self.waiting = {policy.name: 0 for policy in policies}
        self._backoff: dict[str, list[float]] = {policy.name: [] for policy in policies}
        self.untracked: set[str] = set()
        self._all_rated = all(policy.rate_limits for policy in policies)
        self._single = len(policies) == 1
        self._costed = {policy.name for policy in policies if policy.unit_limits}
        # Dependencies whose limits a new job cannot move: no unit limits (a new job with a
        # smaller estimate may fit where the head's did not), no adaptive limits.
        self._plain = {
            policy.name for policy in policies if not policy.unit_limits and policy.adaptive is None
        }
        self.scopes = 0  # (dependency, scope) pairs seen
        self._stalled = False  # the last step announced a wakeup at its own instant and admitted nothing
        self._steady = True  # every block of the last step reads the same until it is lifted
        self._clock_only: list[tuple[str, float]] = []  # (dependency, until) held by the clock alone
        self._full: list[tuple[str, float | None]] = []  # (dependency, until) held by a full limit

    # -- what the driver tells it ------------------------------------------------------

    def ticked(self, blocked: list[Blocked], stalled: bool) -> None:
        self._stalled = stalled
        if not (blocked or self._clock_only or self._full) and self._steady:
            return  # no block, as after the last step: what `skips` reads stays as it is
        # What `skips` reads of the blocks, worked out once per step rather than per question.
        steady, clock_only, full = True, [], []
        for block in blocked:
            reason = block.reason
            if reason not in _STEADY_BLOCKS:
                steady = False
            if reason in _CLOCK_ONLY and block.until is not None:
                clock_only.append((block.dependency, block.until))
            if reason in _FULL:
                full.append((block.dependency, block.until))
        self._steady, self._clock_only, self._full = steady, clock_only, full

    def retry_scheduled(self, dependency: str, eligible_at: float) -> None:
        self.waiting[dependency] += 1
        heapq.heappush(self._backoff[dependency], eligible_at)

    # -- the rule --------------------------------------------------------------------------

    def skips(
        self, results: Sequence[Result], now: float, arrivals: Sequence[tuple[float, str, str, str]] = ()
    ) -> bool:
        """May `results` and `arrivals`, all that reached Janus at `now`, be applied and
        submitted without the admission step?

        An arrival is submitted without it when its dependency is held by a limit a new job
        cannot lift (a full rate window, every slot held, a pause) and not only until `now`: the
        step would find the same limit and admit nothing of it. Not a dependency with unit or
        adaptive limits (a smaller estimate may fit; the limits move with the outcomes). The
        conditions on the other dependencies are those for results:

        Yes when every one is a success of a dependency that `admit` at `now` could not admit
        from: one that the last decision found held by a limit that only the clock lifts, and
        not before a later instant (a retry_after pause; not a rate window, which a result's
        duration may free early), or one with no job
        eligible (the idle rule). A success lifts no such limit and makes no job eligible;
        nothing else reached Janus at `now` (no new job, no unused admission, no wakeup due),
        so every other dependency is as the last step left it but for the clock, and the
        clock's changes are wakeups that step scheduled, unless it announced one at its own
        instant and stalled. A failure is not skipped: its retry's backoff end is a new
        wakeup, and it may pause the dependency or open its circuit; nor a success that carries
        a `retry_after` (it pauses the dependency). A success may still open a circuit (the
        outcome that brings its window to `min_outcomes`) or close one: the driver looks at
        the gates after applying them, and runs the step if one moved.

        What `admit` does besides admitting then happens at the next step instead: forgetting
        scopes that emptied, which only the core's per-scope share of its memory reads,
        constant while there are few scopes (with more, every result gets its step); and
        lifting a recovery ramp past its time, which `admit` also does at its first look at a
        dependency with rate limits (so the idle rule needs them on every dependency), and
        whose text in a `Blocked` changes with the clock (so the idle rule needs the last
        decision's blocks to read the same at every instant). With several dependencies the
        held rule needs that too: a step for one dependency is a step for all, and a ramp
        without rate limits is lifted at any step once it no longer binds; so it needs every
        block steady, and rate limits on every dependency. A retry in its backoff is not
        waiting yet: its end is a wakeup, and the step then admits it.
        """
        if self._stalled or self.scopes > _CONSTANT_SHARE_SCOPES:
            return False
        if not self._steady:
            return False  # a block that reads otherwise later: the step must say it again
        clock_only = self._clock_only
        if results and not clock_only and not self._all_rated:
            return False  # the loop below would say so at the first result: none held, no idle rule
        held: AbstractSet[str] = _NONE
        if clock_only and (self._all_rated or self._single):  # another's ramp lifts at any step
            held = {dependency for dependency, until in clock_only if until > now}
        arriving: AbstractSet[str] = _NONE
        if arrivals:
            if not (self._all_rated or self._single) or not self._full:
                return False  # (no dependency held by a full limit: the first arrival is not held)
            full = {dependency for dependency, until in self._full if until is None or until > now}
            plain = self._plain
            arriving = set()
            for _, _, dependency, _ in arrivals:
                if dependency not in full or dependency not in plain:
                    return False
                arriving.add(dependency)
        idle_rule = self._all_rated
        waiting, untracked = self.waiting, self.untracked
        costed = self._costed
        for admission, failed, _, retry_after, cost, _ in results:
            if failed or retry_after is not None:
                return False
            dependency = admission.dependency
            if cost is not None and dependency in costed:
                return False  # settling the cost moves the unit windows, either way
            if dependency in held:
                continue
            if dependency in arriving:
                return False  # not idle any more, and its result may free a rate window's place
            if not idle_rule or dependency in untracked:
                return False
            backoff = self._backoff[dependency]
            while backoff and backoff[0] <= now:
                heapq.heappop(backoff)  # eligible now
            if waiting[dependency] > len(backoff):
                return False
        return True
