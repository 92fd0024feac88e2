"""The adaptive rate test's worker and its simulated API, in a process of their own.

As workers are in production: sharing the leader's event loop, on a loaded machine the worker
started calls seconds after their admission, and the API judged the leader's stalls rather than
its limit (docs/benchmarks.md, "adaptive"). Each of the worker's records is printed as a JSON
line for the test to read.

    python -m tests.integration.sliding_api_worker AMQP_URL BEGAN HIGH LOW C_HIGH C_LOW END
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from collections import deque
from collections.abc import Callable

from janus.client import ReadyJob, Throttled, Worker
from janus.client.worker import WorkRecord


class SlidingApi:
    """At most `capacity()` accepted calls in any 1 s window; refusals are not counted."""

    def __init__(self, capacity: Callable[[float], int]) -> None:
        self.capacity = capacity
        self._accepted: deque[float] = deque()

    def call(self, now: float) -> bool:
        while self._accepted and self._accepted[0] + 1.0 <= now:
            self._accepted.popleft()
        if len(self._accepted) >= self.capacity(now):
            return False
        self._accepted.append(now)
        return True


async def main(amqp: str, began: float, high: float, low: float, c_high: int, c_low: int, end: float) -> None:
    api = SlidingApi(lambda now: c_low if began + high <= now < began + high + low else c_high)

    async def handler(job: ReadyJob) -> None:
        await asyncio.sleep(0.01)  # the call's own time
        if not api.call(time.time()):
            raise Throttled(message="throttled: 429 Too Many Requests")

    done = asyncio.Event()

    def report(record: WorkRecord) -> None:
        print(json.dumps(dataclasses.asdict(record)), flush=True)
        if record.received_at >= end:
            done.set()

    worker = Worker(amqp, {"api": handler}, on_record=report, prefetch=100)
    await worker.start()
    await done.wait()
    await worker.stop()


if __name__ == "__main__":
    url, *numbers = sys.argv[1:]
    began, high, low, c_high, c_low, end = (float(n) for n in numbers)
    asyncio.run(main(url, began, high, low, int(c_high), int(c_low), end))
