"""One scope of one dependency in the core: its waiting jobs in their two queues, its slots
and where it stands against its own caps (`core/lane.py` holds the scopes of a dependency)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from janus.core.decisions import WaitReason
from janus.core.rate import SlidingWindow

# Most scopes never have a job eligible again (a retry, or an admission returned unused): they
# share this empty deque until their first one (`Scope.add_again`), instead of each holding a
# deque of its own that `admit` reads at every admission: with many scopes that read is a
# cache miss on the hot path. Never append to it.
NO_AGAIN: deque[str] = deque()

ScopeCap = tuple[WaitReason, str, float | None]  # (reason, limit, until)


@dataclass(kw_only=True, eq=False, slots=True)  # slots: faster attribute access on the hot path
class Scope:
    """One scope of one dependency: its waiting jobs, its slots, its caps."""

    name: str
    windows: list[SlidingWindow]
    stride: int  # fairness.stride of its weight, worked out once (and again on a policy change)
    fresh: deque[str] = field(default_factory=deque)  # first attempts in memory, in seq order
    again: deque[str] = field(
        default_factory=lambda: NO_AGAIN
    )  # admitted before, eligible again, in that order
    stored: int = 0  # first attempts only in the store: seq > loaded_upto
    loaded_upto: int = 0
    paging: bool = False  # a page request is out
    held: int = 0
    delayed: int = 0
    admitted: int = 0
    parked: WaitReason | None = None  # at a cap of its own: out of the fair queue until it lifts
    # Fair-share passes owed (or owed back, negative) for settled costs, added to its next charge.
    unit_debt: int = 0

    def add_again(self, job_id: str) -> None:
        """A job admitted before is eligible again: it queues behind the others."""
        if self.again is NO_AGAIN:
            self.again = deque()
        self.again.append(job_id)

    @property
    def eligible(self) -> int:
        return len(self.fresh) + len(self.again) + self.stored

    @property
    def empty(self) -> bool:
        return not (self.fresh or self.again or self.stored or self.held or self.delayed)
