"""`janus conformance` against real workers: the Python SDK's and the Node.js example pass
every rule, and a worker that breaks one duty fails exactly the matching rule (so the
harness cannot pass everything by construction)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from janus.conformance.cli import render
from janus.conformance.harness import Options, run_conformance
from janus.conformance.rules import RULE_NAMES
from tests.node_example import WORKER, node_example

pytestmark = pytest.mark.integration

PYTHON_WORKER = (sys.executable, "-m", "janus.conformance.python_worker")
BROKEN_WORKER = (sys.executable, "-m", "tests.integration.broken_worker")


async def test_the_python_sdk_worker_passes_every_rule(vhost: str) -> None:
    worker = " ".join(PYTHON_WORKER)
    done = await _janus("conformance", "--worker-command", worker, "--amqp-url", vhost, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"]
    assert [(rule["rule"], rule["passed"]) for rule in report["rules"]] == [
        (name, True) for name in RULE_NAMES
    ]


@pytest.mark.parametrize(
    ("mode", "rule"),
    [
        ("ignores-expires-at", "expired_rejected"),
        # Never answered: the first phase times out, and the run still goes on to the kill.
        ("drops-expired", "expired_rejected"),
        ("no-lease-cutoff", "lease_cutoff"),
        ("empty-routing-key", "routing_key"),
        ("no-confirms", "publisher_confirms"),
        # Started twice, so reported twice.
        ("starts-redelivered", {"redelivered_dropped", "one_result_per_admission"}),
    ],
)
async def test_a_worker_that_breaks_one_duty_fails_that_rule_alone(
    vhost: str, mode: str, rule: str | set[str]
) -> None:
    command = (*BROKEN_WORKER, mode)
    report = await run_conformance(Options(worker_command=command, amqp_url=vhost, timeout=15))
    failed = {result.rule for result in report.rules if not result.passed}
    assert failed == (rule if isinstance(rule, set) else {rule}), render(report, " ".join(command))


async def test_the_command_exits_1_and_names_the_rule_when_the_worker_acks_after_the_work(vhost: str) -> None:
    worker = " ".join((*BROKEN_WORKER, "acks-after-work"))
    done = await _janus("conformance", "--worker-command", worker, "--amqp-url", vhost)
    assert done.returncode == 1, done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert [line.split(":")[0] for line in failed] == ["FAIL ack_before_start"], done.stdout


async def test_the_node_example_worker_passes_every_rule_on_a_vhost_the_command_makes(
    services: object,
) -> None:
    example = node_example()
    done = await _janus(
        "conformance",
        "--worker-command",
        f"node {example / WORKER.name}",
        "--amqp-url",
        "amqp://guest:guest@127.0.0.1:5672",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(RULE_NAMES)} of {len(RULE_NAMES)} rules passed" in done.stdout
    vhost = done.stdout.splitlines()[0].rsplit(" ", 1)[-1]
    listed = await asyncio.to_thread(
        subprocess.run, ["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True, check=True
    )
    assert vhost.startswith("janus-conformance-")
    assert vhost not in listed.stdout.split(), "the vhost the run made outlived it"


async def _janus(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "janus.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
