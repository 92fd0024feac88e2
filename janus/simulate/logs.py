"""What a simulation run recorded, per dependency and per scope: the report, the plot and the
timeline read these values."""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from janus.core.policy import DependencyPolicy

Row = tuple[float, str, str, str, str, int, str]  # t, event, job_id, dependency, scope, attempt, detail


@dataclass(kw_only=True, slots=True)
class ScopeLog:
    """What happened to one scope of one dependency."""

    arrived: array[float] = field(default_factory=lambda: array("d"))
    admitted: array[float] = field(default_factory=lambda: array("d"))
    waits: array[float] = field(default_factory=lambda: array("d"))  # arrival to first admission
    finished: array[float] = field(default_factory=lambda: array("d"))  # succeeded or dead
    retries: int = 0  # admissions of jobs that had failed before
    succeeded: int = 0
    dead: int = 0
    returned: int = 0  # admissions that came back unused
    waiting: int = 0  # jobs waiting for an admission now (eligible or backing off)
    # limit -> seconds the scope had jobs waiting (eligible or backing off) while its dependency
    # was held at that limit (kept up to SCOPES_ACCOUNTED scopes per dependency: simulate/time_at_limits.py)
    at_limit: dict[str, float] = field(default_factory=lambda: defaultdict(float))


@dataclass(kw_only=True, slots=True)
class DependencyLog:
    scopes: dict[str, ScopeLog] = field(default_factory=dict)
    started: array[float] = field(default_factory=lambda: array("d"))  # calls made
    failed_calls: int = 0
    throttled: int = 0
    lease_cut: int = 0  # handlers cut at the lease's end
    at_limit: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # limit -> seconds
    gate_events: list[tuple[float, str, str]] = field(default_factory=list)  # (t, kind, detail)
    # Costed jobs: units estimated and reported by the calls that reported a cost, and the jobs
    # set aside at intake because their cost can never be admitted: (job_id, scope, reason).
    units_estimated: float = 0.0
    units_actual: float = 0.0
    refused: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass(kw_only=True, slots=True)
class Outcome:
    """Everything a run produced, for the report, the plot and the timeline."""

    policies: Mapping[str, DependencyPolicy]
    dependencies: dict[str, DependencyLog]
    end: float  # the virtual time of the last event handled
    unfinished: int  # jobs neither succeeded nor dead when the run ended
    jobs: int
    ticks: int
    events: int
    timeline: list[Row] | None
