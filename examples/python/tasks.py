"""Plain functions for `janus worker`, run from this directory:

    janus worker payments-api=tasks:charge email=tasks:send_email

Each call sleeps in place of a slow API (CALL_SECONDS, ten seconds unless set).
"""

import os
import time

from janus.client import ReadyJob, RetryAfter

CALL_SECONDS = float(os.environ.get("CALL_SECONDS", "10"))


def charge(job: ReadyJob) -> None:
    """Returning reports success; any exception reports a failure, which Janus retries."""
    order = job.payload["order"]
    print(f"charging order {order} for {job.scope}, try {job.try_number} of {job.max_attempts}", flush=True)
    time.sleep(CALL_SECONDS)  # the call to the payments API; give real calls a timeout below the lease
    if order % 10 == 0 and job.try_number == 1:
        raise RetryAfter(2.0)  # the API said 429, Retry-After: 2: Janus pauses payments-api, then retries


def send_email(job: ReadyJob) -> None:
    time.sleep(CALL_SECONDS / 10)
