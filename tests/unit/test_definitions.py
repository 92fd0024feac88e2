"""The definitions tool renders worker-<dependency> users only for a broker whose topic
permissions check CC and BCC routing keys, unless told to accept the risk (docs/security.md)."""

from __future__ import annotations

import json

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
