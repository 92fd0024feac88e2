"""The definitions tool renders worker-<dependency> users only for a broker whose topic
permissions check CC and BCC routing keys, unless told to accept the risk (docs/security.md)."""

from __future__ import annotations

import json
import re

import pytest

from janus.broker import definitions


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = definitions.main(list(argv))
    except SystemExit as exit:
        code = int(exit.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("version", "checked"),
    [
        ("3.10.8", False),  # the local broker of the tests: the forgery works there
        ("3.13.7", False),  # the last open-source 3.13.x
        ("4.0.2", False),
        ("4.0", False),  # 4.0.0: a bare series cannot promise the patch
        ("4.0.3", True),  # rabbitmq-server #12553
        ("4.1", True),
        ("10.0.0", True),
    ],
)
def test_which_brokers_check_cc_and_bcc(version: str, checked: bool) -> None:
    assert (definitions.unchecked_cc_risk(version) is None) == checked


def test_worker_users_are_refused_for_an_old_or_unnamed_broker(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--dependency", "api"], ["--dependency", "api", "--rabbitmq-version", "3.10.8"]):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, "")
        assert len(err.strip().splitlines()) == 1, "one line"
        assert "refusing to render worker users" in err
        assert "4.0.3" in err
        assert "--allow-unchecked-cc" in err


def test_worker_users_for_a_broker_that_checks_or_when_the_risk_is_accepted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "--dependency", "api", "--rabbitmq-version", "4.0.3")
    assert (code, err) == (0, "")
    document = json.loads(out)
    assert document["rabbit_version"] == "4.0.3"
    assert "worker-api" in {user["name"] for user in document["users"]}
    code, out, err = run(capsys, "--dependency", "api", "--allow-unchecked-cc")
    assert code == 0
    assert err.startswith("warning: a RabbitMQ of unnamed version may not check the CC and BCC")
    assert "worker-api" in {user["name"] for user in json.loads(out)["users"]}


def test_no_worker_users_no_question(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert (code, err) == (0, "")
    assert json.loads(out)["rabbit_version"] == definitions.RENDERED_FOR


def test_a_malformed_version_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--dependency", "api", "--rabbitmq-version", "four")
    assert code == 2
    assert "not a RabbitMQ version" in err


def test_scale_out_renders_the_partitioned_intake_in_place_of_the_one_queue(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "--scale-out", "--queue-type", "quorum")
    assert code == 0
    document = json.loads(out)
    queues = {queue["name"]: queue["arguments"] for queue in document["queues"]}
    assert "janus.q.intake" not in queues
    assert queues["janus.q.intake-unrouted"] == {"x-queue-type": "quorum"}
    exchanges = {exchange["name"]: exchange for exchange in document["exchanges"]}
    assert exchanges["janus.intake.partitioned"]["internal"] is True
    assert exchanges["janus.intake.partitioned"]["arguments"] == {
        "alternate-exchange": "janus.intake.unrouted"
    }
    assert exchanges["janus.intake.unrouted"]["type"] == "fanout"
    assert exchanges["janus.intake"]["internal"] is False
    bindings = {
        (b["source"], b["destination"], b["destination_type"], b["routing_key"]) for b in document["bindings"]
    }
    assert ("janus.intake", "janus.intake.partitioned", "exchange", "#") in bindings
    assert ("janus.intake.unrouted", "janus.q.intake-unrouted", "queue", "") in bindings
    assert not any(destination == "janus.q.intake" for _, destination, _, _ in bindings)
    # Without the flag: as before, the one queue bound with "#" and none of the above.
    code, out, _ = run(capsys)
    plain = json.loads(out)
    assert "janus.q.intake" in {queue["name"] for queue in plain["queues"]}
    assert "janus.intake.partitioned" not in {exchange["name"] for exchange in plain["exchanges"]}


@pytest.mark.parametrize(
    ("role", "right", "name", "allowed"),
    [
        ("janus", 0, "janus.q.intake.api", True),  # declares each dependency's intake queue
        ("janus", 0, "janus.q.intake", False),  # not the shared ones: the definitions own them
        ("janus", 0, "janus.q.intake-unrouted", False),
        ("janus", 0, "janus.intake.partitioned", False),
        ("janus", 1, "janus.q.intake.api", True),  # binds it
        ("janus", 2, "janus.intake.partitioned", True),  # ... to the inner exchange
        ("janus", 2, "janus.intake", False),
        ("janus", 2, "janus.q.intake-unrouted", True),  # consumes it
        ("producer", 1, "janus.intake", True),
        ("producer", 1, "janus.intake.partitioned", False),
        ("producer", 2, "janus.q.intake.api", False),
        ("worker", 2, "janus.q.intake.api", False),
        ("worker", 2, "janus.q.intake-unrouted", False),
        ("worker", 2, "janus.intake.partitioned", False),
        ("worker", 1, "janus.q.intake.api", False),
    ],
)
def test_who_may_touch_member_modes_intake(role: str, right: int, name: str, allowed: bool) -> None:
    """(configure, write, read) regexes, as RabbitMQ matches them against a resource's name."""
    assert bool(re.match(definitions.PERMISSIONS[role][right], name)) is allowed
