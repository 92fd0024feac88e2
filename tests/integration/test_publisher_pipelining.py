"""Admissions are pipelined: a tick's publishes are all handed to the connection's writer at once.

aiormq's `basic_publish` by default holds the channel's lock until the writer task has written
the message, so N publishes took N hand-overs between tasks before the last one left (issue 22).
The count below is of publishes queued after a fixed number of event-loop turns, not a time.
"""

from __future__ import annotations

import asyncio
import time

import aio_pika
import aiormq

from janus.broker import topology
from janus.broker.publisher import Publisher
from janus.core.jobs import Admission, admitted, first_attempt
from janus.protocol import decode_returned

BATCH = 50


def _admissions(count: int) -> list[Admission]:
    now = time.time()
    made = []
    for seq in range(count):
        job = first_attempt(job_id=f"job-{seq}", dependency="api", scope="s", payload=None, seq=seq, now=now)
        made.append(admitted(job, now, now + 30.0, now + 60.0)[1])
    return made


async def test_a_ticks_admissions_are_all_queued_for_the_socket_within_two_loop_turns(vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        await topology.declare_topology(connection, ["api"])
        publisher = await Publisher.open(connection)
        raw = await publisher.channel.get_underlay_channel()
        before = raw.delivery_tag
        confirmed = publisher.start_admissions(_admissions(BATCH))
        for _ in range(2):  # what the admission loop yields before its next tick
            await asyncio.sleep(0)
        queued = raw.delivery_tag - before
        assert await confirmed == [], "every admission confirmed"
        # The connection's writer buffers this many messages; each blocks the next one's put
        # until the writer has taken it, so at least the buffer's worth is queued at once (with
        # aiormq's default wait, one publish: each waits for the writer before the next starts).
        assert queued >= aiormq.Connection.FRAME_BUFFER_SIZE, f"{queued} of {BATCH} publishes queued"
        # Pipelined, still in order: the ready queue holds them as the tick listed them.
        channel = await connection.channel()
        queue = await channel.get_queue(topology.ready_queue("api"), ensure=True)
        received = []
        for _ in range(BATCH):
            message = await queue.get(no_ack=True, timeout=10)
            received.append(decode_returned(message.body)[0])
        assert received == [f"job-{seq}" for seq in range(BATCH)]
