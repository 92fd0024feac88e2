"""What a new term rebuilds the core from: a `Snapshot` of the store, and how far back it must reach.

The store fills a `Snapshot`; `Scheduler.rebuilt` makes a core of it. The service (at the start
of every term, and after a tick that failed) and every test that rebuilds go through these two,
so the tests check the rebuild the service runs.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from janus.core.adaptive import AdaptiveState
from janus.core.gates import GateState
from janus.core.jobs import Job
from janus.core.policy import DependencyPolicy
from janus.core.steering import Steering

# Reach this much further back than the windows: an admission exactly at a window's edge
# is not lost to rounding between the two clocks.
HISTORY_MARGIN = 1.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Backlog:
    """One scope's first attempts waiting in the store (paged in by the core when it needs them)."""

    dependency: str
    scope: str
    waiting: int
    max_seq: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Snapshot:
    """Everything of the store a new core needs, as of one moment."""

    # Unfinished jobs held in memory: admitted ones, and waiting ones admitted before (retries,
    # returned admissions), in the order to restore them (jobs eligible at the same time keep
    # that order). First attempts stay in the store: `backlog`.
    jobs: Sequence[Job] = ()
    backlog: Sequence[Backlog] = ()
    # Per dependency, (scope, admitted_at) of the admissions in the longest span of its rate windows.
    admissions: Mapping[str, Sequence[tuple[str, float]]] = field(default_factory=dict)
    # Per dependency with unit limits, (job_id, attempt, admitted_at, units) of the admissions in
    # the same span: units are the estimate, or the actual cost once a result settled it.
    unit_admissions: Mapping[str, Sequence[tuple[str, int, float, float]]] = field(default_factory=dict)
    # Per dependency, (admitted_at, retry) of the admissions in its retry budget's window.
    budget_admissions: Mapping[str, Sequence[tuple[float, bool]]] = field(default_factory=dict)
    gates: Sequence[GateState] = ()  # circuits and pauses as the last leader left them
    steering: Sequence[Steering] = ()  # operators' pauses and overrides, as recorded
    adaptive: Sequence[AdaptiveState] = ()  # adaptive limits as the last leader left them
    max_seq: int = 0  # the highest seq among the jobs above: new jobs go after it

    def unconfigured(self, configured: Container[str]) -> int:
        """Unfinished jobs of dependencies no longer configured: they wait, untouched."""
        return sum(1 for job in self.jobs if job.dependency not in configured) + sum(
            entry.waiting for entry in self.backlog if entry.dependency not in configured
        )


def history_since(
    policies: Iterable[DependencyPolicy], now: float, steering: Iterable[Steering] = ()
) -> tuple[float, float]:
    """From when the store must load admissions at `now`: (for the rate windows, for the retry budgets).
    An override's rate limits may count over longer spans than the policy's: they reach back too."""
    policies = list(policies)
    by_name = {policy.name: policy for policy in policies}
    for steer in steering:
        if steer.override is not None and steer.dependency in by_name:
            policies.append(steer.override.applied_to(by_name[steer.dependency]))
    longest = max((policy.longest_window for policy in policies), default=0.0)
    budget_window = max((policy.retry.budget_window for policy in policies), default=0.0)
    return now - longest - HISTORY_MARGIN, now - budget_window - HISTORY_MARGIN
