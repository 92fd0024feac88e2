"""The store's side of the pure core, for its tests: what `load_pages` and `Store.snapshot` return."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from janus.core.decisions import PageRequest
from janus.core.gates import GateState
from janus.core.jobs import Job, JobState
from janus.core.rebuild import Backlog, Snapshot

# (scope, admitted_at, retry) of one admission
History = Mapping[str, Iterable[tuple[str, float, bool]]]


def page_for(request: PageRequest, stored: Iterable[Job]) -> list[Job]:
    """The request's scope's next waiting first attempts after `after_seq`, in seq order."""
    return sorted(
        (
            job
            for job in stored
            if job.dependency == request.dependency
            and job.scope == request.scope
            and job.state is JobState.WAITING
            and job.attempt == 0
            and job.seq > request.after_seq
        ),
        key=lambda job: job.seq,
    )[: request.limit]


def snapshot_of(
    stored: Iterable[Job],
    history: History,
    *,
    admissions_since: float,
    budget_since: float,
    gates: Sequence[GateState] = (),
    first_attempts_in_memory: bool = False,
) -> Snapshot:
    """What `Store.snapshot` reads from these tables: every unfinished job admitted before, and
    each scope's waiting first attempts as a backlog (or, with `first_attempts_in_memory`, as
    jobs to hold, like jobs revived by hand); jobs in seq order, and per dependency its
    admissions after each cutoff."""
    ordered = sorted(stored, key=lambda job: job.seq)
    jobs: list[Job] = []
    backlog: dict[tuple[str, str], list[int]] = defaultdict(list)
    for job in ordered:
        if job.state.terminal:
            continue
        if job.state is JobState.WAITING and job.attempt == 0 and not first_attempts_in_memory:
            backlog[(job.dependency, job.scope)].append(job.seq)
        else:
            jobs.append(job)
    admissions: dict[str, list[tuple[str, float]]] = {}
    budgets: dict[str, list[tuple[float, bool]]] = {}
    for dependency, entries in history.items():
        entries = list(entries)
        admissions[dependency] = [(scope, at) for scope, at, _ in entries if at > admissions_since]
        budgets[dependency] = [(at, retry) for _, at, retry in entries if at > budget_since]
    return Snapshot(
        jobs=jobs,
        backlog=[
            Backlog(dependency=dependency, scope=scope, waiting=len(seqs), max_seq=max(seqs))
            for (dependency, scope), seqs in backlog.items()
        ],
        admissions=admissions,
        budget_admissions=budgets,
        gates=gates,
        max_seq=max((job.seq for job in ordered), default=0),
    )
