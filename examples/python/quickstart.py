"""Submit a job and work on it, from async Python: the SDK in one file.

Needs a running Janus whose configuration has the dependency `payments-api`
(`janus run --config config/janus.toml`); JANUS_AMQP_URL names another broker.
"""

import asyncio
import os
import uuid

from janus.client import Producer, ReadyJob, RetryAfter, Worker

AMQP_URL = os.environ.get("JANUS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
done = asyncio.Event()


async def charge(job: ReadyJob) -> None:
    """Called once per admission; returning reports success, raising reports a failure."""
    print(
        f"charging order {job.payload['order']} for {job.scope}, try {job.try_number} of {job.max_attempts}"
    )
    if job.payload["order"] < 0:  # e.g. the API answered 429 with Retry-After: 5
        raise RetryAfter(5.0)  # Janus admits nothing of payments-api for 5 s, then retries
    done.set()


async def main() -> None:
    async with Worker(AMQP_URL, {"payments-api": charge}):
        async with await Producer.connect(AMQP_URL) as producer:
            # A job id is submitted once: publishing it again never runs it again.
            job_id = f"order-42-{uuid.uuid4().hex[:8]}"
            await producer.submit(job_id, "payments-api", {"order": 42}, scope="tenant-a")
        await asyncio.wait_for(done.wait(), timeout=60)
    # Leaving the `async with` stops the worker: no new jobs, running ones finish and report.


asyncio.run(main())
