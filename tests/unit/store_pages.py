"""The store's side of paging, for tests of the pure core: what `load_pages` would return."""

from __future__ import annotations

from collections.abc import Iterable

from janus.core.decisions import PageRequest
from janus.core.jobs import Job, JobState


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
