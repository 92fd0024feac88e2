"""How long each dependency, and each of its scopes, was held at each limit: the report's "time
at each limit". Between two looks (the end of a tick, or a result applied without one) what
held a dependency cannot change, so the span since the last look goes to what held it then."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from janus.core.decisions import Blocked, WaitReason
from janus.core.policy import DependencyPolicy
from janus.core.scheduler import Scheduler
from janus.simulate.logs import DependencyLog

# Time at a limit is told per scope up to this many scopes of a dependency: each span held at
# a limit reads every scope's backlog.
SCOPES_ACCOUNTED = 1000


class TimeAtLimits:
    def __init__(self, logs: Mapping[str, DependencyLog], policies: Sequence[DependencyPolicy]) -> None:
        self._logs = logs
        self.blocked: list[Blocked] = []  # the dependencies held back by a limit after the last tick
        # dependency -> {scope: its cap, named as a limit is in the report}: the scopes held at a
        # cap of their own since the last look
        self.capped: dict[str, dict[str, str]] = {}
        # Does any scope have a cap of its own to be held at? (A simulation changes no policy.)
        self.caps = any(
            policy.fairness.scope_concurrency is not None or policy.fairness.scope_rate_limits
            for policy in policies
        )
        self._labels: dict[tuple[WaitReason, str], str] = {}  # a block's name in the report
        self._since = 0.0  # the last look

    def restart(self, now: float) -> None:
        """Nothing was held since the last look: the next span starts at `now`."""
        self._since = now

    def note_caps(self, scheduler: Scheduler) -> None:
        """Which scopes are held at a cap of their own now (the core keeps them: O(1) if none)."""
        capped = scheduler.scopes_at_caps()
        self.capped = (
            {
                dependency: {scope: f"{reason.value} ({limit})" for scope, (reason, limit) in caps.items()}
                for dependency, caps in capped.items()
            }
            if capped
            else {}
        )

    def account(self, now: float) -> None:
        """The time since the last look, to the limit each dependency was held at by it, and to
        the cap each capped scope was held at. A dependency's time at a scope's cap is the time
        at least one of its scopes with jobs waiting was held there."""
        elapsed = now - self._since
        if elapsed > 0:
            for dependency, caps in self.capped.items():
                log = self._logs[dependency]
                counted: set[str] = set()
                for scope, limit in caps.items():
                    scope_log = log.scopes.get(scope)
                    if scope_log is None or not scope_log.waiting:
                        continue
                    scope_log.at_limit[limit] += elapsed
                    if limit not in counted:
                        counted.add(limit)
                        log.at_limit[limit] += elapsed
            labels = self._labels
            for block in self.blocked:
                label = labels.get((block.reason, block.limit))
                if label is None:  # named once: most ticks of a busy dependency are held by one limit
                    if len(labels) > 1000:
                        labels.clear()  # limits that name a value that moves (a ramp's share)
                    label = labels[(block.reason, block.limit)] = f"{block.reason.value} ({block.limit})"
                log = self._logs[block.dependency]
                log.at_limit[label] += elapsed
                # The scopes that waited through it: their backlogs changed only at the last tick.
                if len(log.scopes) <= SCOPES_ACCOUNTED:
                    for scope_log in log.scopes.values():
                        if scope_log.waiting:
                            scope_log.at_limit[label] += elapsed
        self._since = now
