"""The checks the failover and scale-out system tests share: the audit of a run, one epoch at a
time, which process began admitting, and the processes' logs a failure shows."""

from __future__ import annotations

import asyncio
import itertools
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import asyncpg
import pytest

from janus.audit import AuditReport, audit_database
from janus.config import load_config
from tests.integration.harness import RecordLog, policies
from tests.system.janus_process import JanusProcess

MakeJanus = Callable[..., JanusProcess]


class Traffic(Protocol):
    """What a test's traffic kept: the workers' records and the jobs submitted."""

    log: RecordLog
    submitted: list[str]


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def outputs(processes: Sequence[JanusProcess]) -> str:
    """Every process's log, each under its name: what a failure shows."""
    return "\n".join(f"--- {p.name}\n{p.output()}" for p in processes)


async def judge(traffic: Traffic, config_path: Path, database: str) -> AuditReport:
    """The shared checker (janus.audit) over the workers' records and the job table: nothing
    lost, no limit exceeded."""
    config = load_config(config_path, env={})
    report = await audit_database(
        traffic.log.records, policies(config), database, expected_jobs=traffic.submitted
    )
    print(report.summary())
    assert report.ok, report.summary()
    assert report.lost == []
    assert report.worst_rate_excess <= 0
    assert report.worst_concurrency_excess <= 0
    return report


async def epoch_history(database: str) -> tuple[list[int], dict[int, tuple[float, float, int]]]:
    """The epochs of `leader_terms`, and for each epoch that admitted: (first, last, count)."""
    connection = await asyncpg.connect(database)
    try:
        epochs = [r[0] for r in await connection.fetch("SELECT epoch FROM janus.leader_terms ORDER BY epoch")]
        rows = await connection.fetch(
            "SELECT epoch, min(admitted_at), max(admitted_at), count(*) FROM janus.admissions GROUP BY epoch"
        )
    finally:
        await connection.close()
    return epochs, {r[0]: (r[1], r[2], r[3]) for r in rows}


async def admissions_by_epoch(database: str) -> dict[str, dict[int, tuple[float, float]]]:
    """Per dependency, each epoch's first and last admission; no attempt was admitted twice."""
    connection = await asyncpg.connect(database)
    try:
        rows = await connection.fetch(
            "SELECT dependency, epoch, min(admitted_at), max(admitted_at) FROM janus.admissions"
            " GROUP BY dependency, epoch"
        )
        twice = await connection.fetchval(
            "SELECT count(*) FROM (SELECT job_id, attempt FROM janus.admissions"
            " GROUP BY job_id, attempt HAVING count(*) > 1) AS t"
        )
    finally:
        await connection.close()
    assert twice == 0, f"{twice} attempts admitted twice"
    spans: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
    for row in rows:
        spans[row[0]][row[1]] = (row[2], row[3])
    return spans


def assert_epochs_in_turn(spans: Mapping[int, Sequence[float]], where: str = "") -> None:
    """Each epoch's admissions (first, last, ...) all precede the next epoch's, on the
    database's clock. `where`: the dependency, in member mode."""
    ordered = sorted(spans.items())
    for (earlier, span), (later, next_span) in itertools.pairwise(ordered):
        last, first = span[1], next_span[0]
        assert last < first, f"{where}epoch {earlier} admitted at {last} after epoch {later} began at {first}"


def assert_one_epoch_at_a_time(epochs: list[int], spans: dict[int, tuple[float, float, int]]) -> None:
    """Epochs only grow, and the admissions of any period come from one epoch: each epoch's
    admissions all precede the next epoch's (on the database's clock)."""
    assert epochs == list(range(1, len(epochs) + 1)), epochs
    assert set(spans) <= set(epochs)
    assert_epochs_in_turn(spans)


async def first_admitting(
    processes: list[JanusProcess], after: float, timeout: float
) -> tuple[JanusProcess, float]:
    """Which process began a term after loop time `after`, and when."""
    waiters = {asyncio.ensure_future(p.wait_admitting(timeout, after=after)): p for p in processes}
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    winners = [(waiters[w], w.result()[0]) for w in done if not w.cancelled() and w.exception() is None]
    if not winners:
        pytest.fail("no process began admitting:\n" + "\n".join(p.output() for p in processes))
    return min(winners, key=lambda winner: winner[1])
