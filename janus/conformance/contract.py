"""What a worker under test is given: its environment, and the instructions in the payload.

A worker implementation supports conformance runs by reading its settings from these
variables and, when `JANUS_HANDLER` is `conformance`, running a handler that obeys the
payload's instructions and notes each start (docs/protocol.md, "Conformance").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

# The broker a run uses by default: no vhost, so the run makes one of its own.
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672"
ENV_AMQP_URL = "JANUS_AMQP_URL"  # the AMQP URL, vhost included
ENV_DEPENDENCIES = "JANUS_DEPENDENCIES"  # comma-separated dependency names to consume
ENV_HANDLER = "JANUS_HANDLER"  # "conformance": the handler below
ENV_CONFORMANCE_LOG = "JANUS_CONFORMANCE_LOG"  # a file the handler appends one line to per start
CONFORMANCE_HANDLER = "conformance"
PAYLOAD_KEY = "conformance"  # payload = {"conformance": {instructions}}


@dataclass(frozen=True, kw_only=True, slots=True)
class Instructions:
    """What the conformance handler does: sleep, then succeed, fail, or fail with retry_after."""

    sleep: float = 0.0
    outcome: Literal["success", "failure"] = "success"
    error: str | None = None
    retry_after: float | None = None  # set: fail, reporting this retry_after

    def payload(self) -> dict[str, Any]:
        steps: dict[str, Any] = {"outcome": self.outcome}
        if self.sleep:
            steps["sleep"] = self.sleep
        if self.error is not None:
            steps["error"] = self.error
        if self.retry_after is not None:
            steps["retry_after"] = self.retry_after
        return {PAYLOAD_KEY: steps}

    @classmethod
    def from_payload(cls, payload: object) -> Instructions:
        steps = payload.get(PAYLOAD_KEY) if isinstance(payload, dict) else None
        if not isinstance(steps, dict):
            return cls()
        retry_after = steps.get("retry_after")
        return cls(
            sleep=float(steps.get("sleep", 0.0)),
            outcome="failure" if steps.get("outcome") == "failure" else "success",
            error=str(steps["error"]) if steps.get("error") is not None else None,
            retry_after=float(retry_after) if retry_after is not None else None,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Start:
    """One line of the conformance log: a handler started this admission."""

    job_id: str
    attempt: int
    started_at: float

    def line(self) -> str:
        return (
            json.dumps({"job_id": self.job_id, "attempt": self.attempt, "started_at": self.started_at}) + "\n"
        )


def read_starts(text: str) -> list[Start]:
    """The starts a conformance log holds; a line still being written (or garbled) is skipped."""
    starts = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            starts.append(
                Start(
                    job_id=str(entry["job_id"]),
                    attempt=int(entry["attempt"]),
                    started_at=float(entry["started_at"]),
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return starts
