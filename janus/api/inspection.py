"""What the leader answers to /scopes and /why/JOB (janus/service/inspect.py computes it): the
values the HTTP server cuts its answers from, and the one refusal that is not "not found"."""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from janus.errors import JanusError

Answer = tuple[bool, dict[str, Any]]  # (found, body): False with {"error": ...} when it is not


class NotLeading(JanusError):
    """This process does not lead now: only the leader can answer."""

    def __init__(self) -> None:
        super().__init__("not the leader: ask the process that leads")


@dataclass(frozen=True, kw_only=True)
class ScopesSnapshot:
    """Every dependency's figures and its `depth` largest backlogs, as of `taken_at` (the
    leader's clock); `cost`: seconds of the loop the snapshot took (its slices, not the waits)."""

    taken_at: float
    cost: float
    depth: int
    lanes: dict[str, dict[str, Any]]  # per dependency, the answer's fields but "scopes"
    scopes: dict[str, list[dict[str, Any]]]  # per dependency, largest backlogs first

    def answer(self, dependency: str | None, top: int, offset: int = 0) -> Answer:
        """The /scopes body: per dependency, scopes offset..offset+top of the ranking."""
        if dependency is not None and dependency not in self.lanes:
            return False, {"error": f"unknown dependency {dependency!r}"}
        names = [dependency] if dependency is not None else list(self.lanes)
        body: dict[str, Any] = {
            "dependencies": [
                {**self.lanes[name], "scopes": self.scopes[name][offset : offset + top]} for name in names
            ]
        }
        return True, body


class Inspecting(Protocol):
    """The leader's answers to `janus scopes` and `janus why` (janus.service.inspect); both
    raise NotLeading when this process does not lead."""

    def snapshot(self) -> Coroutine[Any, Any, ScopesSnapshot]: ...

    def why(self, job_id: str) -> Coroutine[Any, Any, Answer]: ...
