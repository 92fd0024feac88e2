"""The conformance handler for the Python SDK worker: obeys the payload's instructions.

Module-level, so that any runner of `module:function` handlers can use it
(`janus.conformance.handler:handle`).
"""

from __future__ import annotations

import asyncio
import os
import time

from janus.client import ReadyJob, RetryAfter
from janus.conformance.contract import ENV_CONFORMANCE_LOG, Instructions, Start


async def handle(job: ReadyJob) -> None:
    log = os.environ.get(ENV_CONFORMANCE_LOG)
    if log:
        _note_start(log, Start(job_id=job.job_id, attempt=job.attempt, started_at=time.time()))
    steps = Instructions.from_payload(job.payload)
    if steps.sleep:
        await asyncio.sleep(steps.sleep)
    if steps.retry_after is not None:
        raise RetryAfter(steps.retry_after, steps.error or "instructed to back off")
    if steps.outcome == "failure":
        raise RuntimeError(steps.error or "instructed to fail")


def _note_start(path: str, start: Start) -> None:
    # Written at once, before the work: the harness kills the worker as soon as it reads it.
    with open(path, "a", encoding="utf-8") as file:
        file.write(start.line())
