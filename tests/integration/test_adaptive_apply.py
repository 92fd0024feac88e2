"""Adaptation turned on and off for a running dependency by `janus apply` (issue 16: "live policy
changes may turn adaptation on and off"), against real RabbitMQ and PostgreSQL, measured at the
workers.

An API that accepts 20 calls in any 1 s window and throttles the rest; the dependency's static
limit lets 60 calls a second through, three times that. Adaptation off, Janus admits at the static limit and most
calls are throttled; `janus apply` with `adaptive.enabled = true` and the adaptive rate finds
the capacity under the static ceiling; `janus apply` with it false again and the static limit
is back, with the adaptive metrics gone.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from janus.client import Producer, ReadyJob, Worker
from janus.client.worker import Throttled
from tests.integration.harness import RecordLog, eventually, janus_cli, make_config, running_janus
from tests.integration.sliding_api_worker import SlidingApi
from tests.integration.test_adaptive_limits import share_and_goodput, timeline

pytestmark = pytest.mark.integration

CAPACITY = 20


def policy_file(path: Path, keys: dict[str, Any]) -> str:
    """A policy file (TOML) of the dependency "api": its keys, and a table per nested one."""
    lines = ['[dependencies."api"]']
    lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items() if not isinstance(value, dict)]
    for table, values in keys.items():
        if isinstance(values, dict):
            lines.append(f'[dependencies."api".{table}]')
            lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def api_policy(*, adaptive: bool) -> dict[str, Any]:
    return {
        # At most 120 starts in any 1 s, counted over admissions in 1 s + admission_ttl: 60/s.
        "rate_limits": ["120/1s"],
        "admission_ttl": "1s",
        "lease_timeout": "30s",
        # Throttled jobs come back soon and never die; no budget and no circuit: the only thing
        # that can keep calls under the capacity is the adaptive rate.
        "retry": {"max_attempts": 1000, "base_delay": "0.1s", "max_delay": "0.5s", "budget": 1.0},
        "circuit": {"enabled": False},
        "adaptive": {"enabled": adaptive, "max_rate": "1000/1s"},
    }


async def test_apply_turns_adaptation_on_and_off_for_a_running_dependency(
    database: str, vhost: str, tmp_path: Path
) -> None:
    config = make_config(database, vhost, {"api": api_policy(adaptive=False)})
    api = SlidingApi(lambda now: CAPACITY)

    async def handler(job: ReadyJob) -> None:
        await asyncio.sleep(0.01)
        if not api.call(time.time()):
            raise Throttled(message="throttled: 429 Too Many Requests")

    log = RecordLog()
    async with running_janus(config) as service:
        registry = service.metrics.registry

        def adaptive_rate() -> float | None:
            return registry.get_sample_value("janus_adaptive_rate", {"dependency": "api"})

        async with await Producer.connect(vhost) as producer:
            await producer.submit_many([(f"job-{i}", "api", None, "default") for i in range(1500)])
        worker = Worker(vhost, {"api": handler}, on_record=log.append, prefetch=100)
        began = time.time()
        await worker.start()
        await log.wait_for(
            lambda records: bool(records) and records[-1].received_at >= began + 6.0, timeout=30
        )
        assert adaptive_rate() is None  # enabled = false: no adaptive limit, no series

        on = policy_file(tmp_path / "on.toml", api_policy(adaptive=True))
        code, out, err = await janus_cli("apply", "--config", on, "--reason", "find it", database=database)
        turned_on = time.time()
        assert code == 0, err
        assert "~ dependencies.api.adaptive.enabled: false -> true" in out, out
        assert "the leader applied version 2" in out, out
        await eventually(lambda: adaptive_rate() is not None, timeout=10)
        await log.wait_for(lambda records: records[-1].received_at >= turned_on + 13.0, timeout=40)
        found = adaptive_rate()
        assert found is not None
        assert found <= 120.0  # the static limit stays a hard ceiling

        off = policy_file(tmp_path / "off.toml", api_policy(adaptive=False))
        code, out, err = await janus_cli("apply", "--config", off, database=database)
        turned_off = time.time()
        assert code == 0, err
        assert "the leader applied version 3" in out, out
        await eventually(lambda: adaptive_rate() is None, timeout=10)  # the series goes with it
        await log.wait_for(lambda records: records[-1].received_at >= turned_off + 7.0, timeout=40)
        await worker.stop()

    records = log.records
    print(timeline(records, began, turned_off + 7.0))
    phases = {
        "off, 2-6 s after the start": share_and_goodput(records, began + 2.0, began + 6.0),
        "on, 8-13 s after apply": share_and_goodput(records, turned_on + 8.0, turned_on + 13.0),
        "off again, 3-7 s after apply": share_and_goodput(records, turned_off + 3.0, turned_off + 7.0),
    }
    print(f"\nAPI capacity {CAPACITY}/1s sliding, static limit 60/s; adaptive rate found {found:.1f}/1s")
    for name, (share, goodput, calls) in phases.items():
        print(f"  {name}: {share:.1%} throttled of {calls} calls, {goodput:.1f} successes/s")
    # Off: admitted at the static limit, three times the capacity: about two calls in three throttled.
    assert phases["off, 2-6 s after the start"][0] > 0.3
    # On: the adaptive rate holds the calls near the capacity (the issue's own criteria, 5 % and
    # 80 %, are measured over longer spans in test_adaptive_limits.py; here only the toggle).
    share, goodput, _ = phases["on, 8-13 s after apply"]
    assert share <= 0.1
    assert goodput >= 0.7 * CAPACITY
    # Off again: the static limit alone, as before.
    assert phases["off again, 3-7 s after apply"][0] > 0.3
