"""With no worker on a dependency's ready queue, Janus admits nothing to it (and spends none of its
rate) while jobs wait; the first worker that comes gets each job's first try, and first admission."""

from __future__ import annotations

import pytest

from janus.client import Producer, ReadyJob, Worker
from janus.core.decisions import WaitReason
from janus.store.repository import Store
from tests.integration.harness import RecordLog, eventually, make_config, running_janus, wait_for_states

pytestmark = pytest.mark.integration

POLICY = {"rate_limits": ["5/1s"], "admission_ttl": "0.2s", "lease_timeout": "5s"}
# Without the pause, an admission nobody takes comes back after its 0.2 s TTL and is made
# again: in this long, each job would be admitted about ten times.
QUIET = 2.0


async def test_no_worker_no_admission_then_the_first_worker_gets_first_tries(
    database: str, vhost: str
) -> None:
    config = make_config(database, vhost, {"api": POLICY})
    log = RecordLog()
    seen: list[ReadyJob] = []

    async def handler(job: ReadyJob) -> None:
        seen.append(job)

    async with running_janus(config) as service:
        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([(f"job-{i}", "api", None, "default") for i in range(3)])
        await wait_for_states(database, lambda rows: len(rows) == 3, timeout=10)
        with pytest.raises(TimeoutError):  # nothing may be admitted while nobody consumes
            await wait_for_states(database, lambda rows: any(r["attempt"] for r in rows.values()), QUIET)
        registry = service.metrics.registry
        assert registry.get_sample_value("janus_ready_consumers", {"dependency": "api"}) == 0
        assert registry.get_sample_value("janus_admissions_total", {"dependency": "api"}) is None
        ok, why = await service.inspector.why("job-0")
        assert ok, why
        assert why["waits_for"][0]["reason"] == "no_worker"
        assert why["waits_for"][0]["detail"] == "no worker is consuming janus.ready.api"
        ok, scopes = service.inspector.scopes("api", top=5)
        assert ok, scopes
        assert scopes["dependencies"][0]["blocked"][0]["reason"] == "no_worker"

        async with Worker(vhost, {"api": handler}, on_record=log.append):
            await log.wait_for(lambda records: len(log.succeeded()) == 3, timeout=20)
        assert sorted((job.job_id, job.attempt, job.try_number, job.max_attempts) for job in seen) == [
            (f"job-{i}", 1, 1, 5) for i in range(3)
        ]

        # The worker has gone: once Janus has counted again, a new job waits, unadmitted.
        await eventually(
            lambda: registry.get_sample_value("janus_ready_consumers", {"dependency": "api"}) == 0, 10
        )
        async with await Producer.connect(vhost) as producer:
            await producer.submit("late", "api")
        with pytest.raises(TimeoutError):
            await wait_for_states(
                database, lambda rows: rows.get("late") is not None and rows["late"]["attempt"] > 0, QUIET
            )
        assert registry.get_sample_value("janus_ready_consumers", {"dependency": "api"}) == 0


async def test_a_core_rebuilt_in_the_term_still_knows_nobody_consumes(database: str, vhost: str) -> None:
    """The consumer counts are observed, never stored: a rebuild (the one a tick failing for its
    input makes, as the one at a term's start) is told them again, or it would admit at once."""
    config = make_config(database, vhost, {"api": POLICY})
    async with running_janus(config) as service:
        async with await Producer.connect(vhost) as producer:
            await producer.submit("job-0", "api")
        await wait_for_states(database, lambda rows: len(rows) == 1, timeout=10)
        store = await Store.connect(config.database_url)
        try:
            rebuilt = await service.kit.rebuild(store)
        finally:
            await store.close()
        (block,) = rebuilt.lane_blocks("api", service.clock())
        assert (block.reason, block.detail) == (
            WaitReason.NO_WORKER,
            "no worker is consuming janus.ready.api",
        )
        assert rebuilt.admit(service.clock()).admissions == []
