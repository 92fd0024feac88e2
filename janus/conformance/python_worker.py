"""The Python SDK worker as a conformance subject: `python -m janus.conformance.python_worker`.

Reads the conformance environment (JANUS_AMQP_URL, JANUS_DEPENDENCIES), runs
`janus.client.Worker` with the conformance handler, and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from janus.client import Worker
from janus.config import DEFAULT_AMQP_URL
from janus.conformance.contract import ENV_AMQP_URL, ENV_DEPENDENCIES
from janus.conformance.handler import handle


async def serve() -> int:
    dependencies = [name.strip() for name in os.environ.get(ENV_DEPENDENCIES, "").split(",") if name.strip()]
    if not dependencies:
        print(f"{ENV_DEPENDENCIES}: name at least one dependency (comma-separated)", file=sys.stderr)
        return 2
    worker = Worker(
        os.environ.get(ENV_AMQP_URL) or DEFAULT_AMQP_URL,
        dict.fromkeys(dependencies, handle),
        name="janus-conformance-python-worker",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.start()
    await stop.wait()
    await worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(serve()))
