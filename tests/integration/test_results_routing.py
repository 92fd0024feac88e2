"""Results are routed per dependency: each dependency's results reach Janus through a queue of its
own, results no dependency takes are set aside (`unroutable`), a result for a job of another
dependency changes nothing (`wrong_dependency`), and a flooded queue does not hold back another
dependency's results. Against the real broker; the broker's own refusals (topic permissions) are
in test_broker_permissions.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import aio_pika
import pytest

from janus.broker import topology
from janus.client import Producer, ReadyJob, Worker
from janus.config import JanusConfig
from janus.errors import TopologyConflict
from janus.protocol import encode_result
from janus.service.app import Service
from tests.integration.harness import RecordLog, job_rows, make_config, queue_depth, running_janus, succeed
from tests.integration.test_misbehaving_workers import rejected_messages

pytestmark = pytest.mark.integration

DEPENDENCIES = {"x": {"lease_timeout": "30s"}, "y": {"lease_timeout": "30s"}}
JSON = "application/json"


def rejected(service: Service, reason: str) -> float:
    value = service.metrics.registry.get_sample_value(
        "janus_rejected_messages_total", {"source": "results", "reason": reason}
    )
    return value or 0.0


def bad_set_aside(service: Service) -> float:
    return sum(rejected(service, reason) for reason in ("malformed_json", "wrong_dependency", "unknown_job"))


def succeeded(service: Service) -> float:
    value = service.metrics.registry.get_sample_value(
        "janus_job_events_total", {"source": "result", "verdict": "succeeded"}
    )
    return value or 0.0


async def until(done: Callable[[], bool], timeout: float, every: float = 0.05) -> None:
    """Poll an in-process metric (it has no event to wait on) until `done`."""
    async with asyncio.timeout(timeout):
        while True:
            if done():
                return
            await asyncio.sleep(every)


async def publish_results(vhost: str, messages: list[tuple[bytes, str]]) -> None:
    """(body, routing key) each, confirmed, as a worker (or the guest admin) would publish them."""
    connection = await aio_pika.connect(vhost)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        results = await channel.get_exchange(topology.RESULTS_EXCHANGE, ensure=True)
        for start in range(0, len(messages), 500):
            await asyncio.gather(
                *(
                    results.publish(aio_pika.Message(body, content_type=JSON), routing_key=key)
                    for body, key in messages[start : start + 500]
                )
            )


async def test_each_dependency_has_its_results_queue_and_the_rest_is_set_aside(
    database: str, vhost: str
) -> None:
    config = make_config(database, vhost, DEPENDENCIES)
    log = RecordLog()
    release = asyncio.Event()

    async def held_until_released(job: ReadyJob) -> None:
        await release.wait()

    async with running_janus(config) as service:
        worker = Worker(vhost, {"x": succeed, "y": held_until_released}, on_record=log.append)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit("job-x", "x")
            await producer.submit("job-y", "y")
        await log.wait_for(lambda _: "job-x" in log.succeeded(), timeout=20)
        rows = await job_rows(database)
        assert rows["job-y"]["state"] == "admitted"
        # job-y is held, attempt 1 current. A worker of x reporting it (a forgery: routing key x),
        # and the same report with no key and with a key no dependency has: none changes anything.
        forged = encode_result(job_id="job-y", attempt=1, outcome="failure", error="forged")
        await publish_results(vhost, [(forged, "x"), (forged, ""), (forged, "nope"), (forged, "x.y")])
        found = await rejected_messages(vhost, 4)
        reasons = Counter(
            (headers[topology.SOURCE_HEADER], headers[topology.REASON_HEADER]) for _, headers in found
        )
        assert reasons == {("results", "wrong_dependency"): 1, ("results", "unroutable"): 3}
        assert all(body == forged for body, _ in found), "set aside as they came"
        rows = await job_rows(database)
        assert (rows["job-y"]["state"], rows["job-y"]["failures"]) == ("admitted", 0)
        # The real report, through y's queue, counts.
        release.set()
        await log.wait_for(lambda _: "job-y" in log.succeeded(), timeout=20)
        await worker.stop()
        await until(lambda: succeeded(service) >= 2, timeout=20)
    rows = await job_rows(database)
    assert {job: (row["state"], row["failures"]) for job, row in rows.items()} == {
        "job-x": ("succeeded", 0),
        "job-y": ("succeeded", 0),
    }
    for dependency in DEPENDENCIES:
        assert await queue_depth(vhost, topology.results_queue(dependency)) == 0


async def queue_behind_a_flood(config: JanusConfig, vhost: str, flood: list[tuple[bytes, str]]) -> None:
    """Janus runs job-y of y, and stops while y's worker holds it; `flood` is published (Janus
    down), then y's worker reports job-y: its result waits in y's queue behind nothing, the
    flood in the queues it was routed to."""
    log = RecordLog()
    started, release = asyncio.Event(), asyncio.Event()

    async def held_until_released(job: ReadyJob) -> None:
        started.set()
        await release.wait()

    async with running_janus(config):
        worker = Worker(vhost, {"y": held_until_released}, on_record=log.append)
        await worker.start()
        async with await Producer.connect(vhost) as producer:
            await producer.submit("job-y", "y")
        await asyncio.wait_for(started.wait(), timeout=20)
    await publish_results(vhost, flood)
    release.set()
    await log.wait_for(lambda _: "job-y" in log.succeeded(), timeout=20)
    await worker.stop()
    assert await queue_depth(vhost, topology.results_queue("y")) == 1


async def test_a_flooded_results_queue_does_not_hold_back_another_dependencys_results(
    database: str, vhost: str
) -> None:
    """2,000 bad results wait in x's queue and one good result in y's when Janus starts: y's is
    applied within the first slices, long before the flood is set aside (with one queue for all,
    it came after all 2,000). Asserted on counts, not times."""
    config = make_config(database, vhost, DEPENDENCIES)
    flood = []
    for index in range(2000):
        if index % 2:
            flood.append((f"garbage {index}".encode(), "x"))
        else:  # forged failures of job-y through x's queue: each must change nothing
            flood.append((encode_result(job_id="job-y", attempt=1, outcome="failure", error="forged"), "x"))
    await queue_behind_a_flood(config, vhost, flood)
    assert await queue_depth(vhost, topology.results_queue("x")) == 2000

    async with running_janus(config) as service:
        # Looked at on every turn of the event loop: between any two ticks.
        await until(lambda: succeeded(service) >= 1, timeout=60, every=0)
        set_aside_before = bad_set_aside(service)
        await until(lambda: bad_set_aside(service) >= 2000, timeout=60)
    assert set_aside_before < 500, f"{set_aside_before:.0f} bad results of x went before y's result"
    # The forgeries of job-y: wrong_dependency while it was held, unknown_job once finished.
    assert rejected(service, "wrong_dependency") + rejected(service, "unknown_job") == 1000
    assert rejected(service, "malformed_json") == 1000
    rows = await job_rows(database)
    assert (rows["job-y"]["state"], rows["job-y"]["failures"]) == ("succeeded", 0)
    assert await queue_depth(vhost, topology.results_queue("x")) == 0


def held_total(service: Service, dependency: str) -> float:
    value = service.metrics.registry.get_sample_value(
        "janus_bad_results_held_total", {"queue": topology.results_queue(dependency)}
    )
    return value or 0.0


async def test_a_flood_past_the_bad_results_limit_waits_in_its_own_queue(database: str, vhost: str) -> None:
    """x's queue holds 2,000 bad results and y's one good result. With bad_results_limit 200/1s,
    Janus sets x's aside at most 200 - 1 + one slice (128) per second, holding x's queue in
    between, while y's result goes through at once; all 2,000 end up set aside (janus/core/flood.py)."""
    limit, window, bad = 200, 1.0, 2000
    config = make_config(database, vhost, DEPENDENCIES, bad_results_limit=f"{limit}/{window:g}s")
    await queue_behind_a_flood(config, vhost, [(f"garbage {index}".encode(), "x") for index in range(bad)])

    loop = asyncio.get_running_loop()
    async with running_janus(config) as service:
        await until(lambda: succeeded(service) >= 1, timeout=60, every=0)
        assert rejected(service, "malformed_json") < bad / 2, "y's result waited behind x's flood"
        # (time, set aside so far), looked at on every turn of the loop, kept when it changed.
        seen: list[tuple[float, float]] = [(loop.time(), rejected(service, "malformed_json"))]

        def all_set_aside() -> bool:
            count = rejected(service, "malformed_json")
            if count != seen[-1][1]:
                seen.append((loop.time(), count))
            return count >= bad

        await until(all_set_aside, timeout=120, every=0)
        assert held_total(service, "x") >= 1
        assert held_total(service, "y") == 0
    # In every window, at most limit - 1 + 128 charged; the metric counts a slice only once it
    # is set aside, which may be late by a slice: so at most one slice more is seen.
    most = max(later - earlier for start, earlier in seen for end, later in seen if 0 <= end - start < window)
    assert most <= limit - 1 + 2 * 128, f"{most:.0f} bad results set aside within {window:g} s"
    assert await queue_depth(vhost, topology.results_queue("x")) == 0
    rows = await job_rows(database)
    assert (rows["job-y"]["state"], rows["job-y"]["failures"]) == ("succeeded", 0)


async def test_stopping_does_not_wait_for_the_bad_results_limit(database: str, vhost: str) -> None:
    """A queue held by its limit (here 50 per 10 s) is let go when Janus stops: what was delivered
    is set aside, the rest stays queued for the next leader; nothing is lost, and the stop does
    not take a window per slice."""
    bad = 1000
    config = make_config(database, vhost, DEPENDENCIES, bad_results_limit="50/10s")
    async with running_janus(config):
        pass  # declares the topology
    await publish_results(vhost, [(f"garbage {index}".encode(), "x") for index in range(bad)])
    loop = asyncio.get_running_loop()
    async with running_janus(config) as service:
        await until(lambda: held_total(service, "x") >= 1, timeout=20)
        stopping = loop.time()
    stopped_in = loop.time() - stopping
    set_aside = rejected(service, "malformed_json")
    assert stopped_in < 10, f"stopping took {stopped_in:.1f} s"
    assert set_aside > 128, "more than the first slice: what was delivered was set aside on stopping"
    assert set_aside + await queue_depth(vhost, topology.results_queue("x")) == bad


async def test_an_old_fanout_results_exchange_is_refused_with_the_fix(database: str, vhost: str) -> None:
    connection = await aio_pika.connect(vhost)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(topology.RESULTS_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
        old = await channel.declare_queue(topology.LEGACY_RESULTS_QUEUE, durable=True)
        await old.bind(topology.RESULTS_EXCHANGE)
        with pytest.raises(TopologyConflict, match="janus broker-upgrade"):
            await topology.declare_topology(connection, ["x"])
        # The upgrade refuses to drop results still waiting in the old queue...
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.RESULTS_EXCHANGE)
        await exchange.publish(aio_pika.Message(b"{}"), routing_key="")
        with pytest.raises(TopologyConflict, match="still holds 1 results"):
            await topology.upgrade_results_exchange(connection)
        await (await (await connection.channel()).get_queue(topology.LEGACY_RESULTS_QUEUE)).purge()
        # ...and once it is empty deletes both, once; the new topology is then declared.
        deleted = await topology.upgrade_results_exchange(connection)
        assert deleted == [topology.LEGACY_RESULTS_QUEUE, topology.RESULTS_EXCHANGE]
        assert topology.RESULTS_EXCHANGE in await topology.declare_topology(connection, ["x"])
        assert await topology.upgrade_results_exchange(connection) == [topology.RESULTS_EXCHANGE]
        await topology.declare_topology(connection, ["x"])
        assert await topology.declare_topology(connection, ["x"]) == [], "idempotent"
    # Janus itself stops on the conflict (no retrying forever), naming the fix.
    connection = await aio_pika.connect(vhost)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(topology.RESULTS_EXCHANGE)
        await channel.declare_exchange(topology.RESULTS_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
    config = make_config(database, vhost, DEPENDENCIES)
    with pytest.raises(BaseExceptionGroup) as raised:
        async with running_janus(config):
            pass
    assert raised.group_contains(TopologyConflict, match="janus broker-upgrade")
