"""How the command reports failures: Janus's own errors in one line each, anything else in full;
and what it says (help defaults, plurals, tries)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from janus import cli
from janus.cli.common import plural
from janus.cli.jobs import describe_tries
from janus.config import Settings
from janus.errors import ConnectionSettingsError, LeadershipLost, StoreError


def failing_with(error: BaseException) -> cli.Command:
    async def command(args: argparse.Namespace, settings: Settings) -> int:
        raise error

    return command


@pytest.mark.parametrize(
    ("error", "code", "lines"),
    [
        # a plain Janus error: configuration, connection
        (StoreError("cannot connect"), 2, ["janus: cannot connect"]),
        # what the supervised tasks raise together, nested as TaskGroups nest them
        (
            ExceptionGroup(
                "term", [StoreError("tick failed"), ExceptionGroup("inner", [LeadershipLost("lost")])]
            ),
            1,
            ["janus: tick failed", "janus: lost"],
        ),
    ],
)
def test_janus_errors_are_reported_plainly(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    code: int,
    lines: list[str],
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "migrate", failing_with(error))
    assert cli.main(["migrate", "--config", "unused.toml"]) == code
    assert capsys.readouterr().err.splitlines() == lines


def test_a_bug_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        cli.COMMANDS, "migrate", failing_with(ExceptionGroup("term", [StoreError("x"), KeyError("bug")]))
    )
    with pytest.raises(ExceptionGroup):
        cli.main(["migrate", "--config", "unused.toml"])


# -- one line and exit code 2 for what a user typed wrong, never a traceback -------------------

CONFIG = Path(__file__).resolve().parents[2] / "config" / "janus.toml"
CASES = Path(__file__).resolve().parent / "config_cases"


@pytest.mark.parametrize(
    ("argv", "env", "complaint"),
    [
        # the payload must be JSON, and JSON has no NaN (Python's parser would take it)
        (["submit", "j", "api", "--payload", "not json"], {}, "--payload is not JSON: Expecting value"),
        (["submit", "j", "api", "--payload", "NaN"], {}, "--payload: NaN is not a JSON number"),
        (["submit", "j", "api", "--payload", "[Infinity]"], {}, "--payload: Infinity is not a JSON number"),
        # what Janus would set aside is refused here, with the protocol's reason
        (
            ["submit", "", "email"],
            {},
            "Janus would set it aside (invalid_fields): job_id: String should have at least 1 character",
        ),
        (
            ["submit", "a\nb", "email"],
            {},
            "Janus would set it aside (invalid_fields): job_id: must not contain control characters",
        ),
        (
            ["submit", "j", "d" * 300],
            {},
            "Janus would set it aside (invalid_fields): dependency: String should have at most 200",
        ),
        # with a configuration at hand, a dependency it does not configure
        (
            ["submit", "j", "nope", "--config", str(CONFIG)],
            {},
            "unknown dependency 'nope': the configuration has email, payments-api",
        ),
        # policy files that used to end in a traceback
        (["check-config", "--config", str(CASES / "not_utf8.toml")], {}, "not UTF-8 (byte 23)"),
        (["check-config", "--config", str(CASES / "nested_too_deep.toml")], {}, "nested too deeply"),
        # the environment is read inside the error handling too
        (
            ["check-config", "--config", str(CONFIG)],
            {"JANUS_AMQP_URL": "amqp://a/", "JANUS_AMQP_URL_FILE": "/dev/null"},
            "set JANUS_AMQP_URL or JANUS_AMQP_URL_FILE, not both",
        ),
        (
            ["check-config", "--config", str(CONFIG)],
            {"JANUS_HTTP_PORT": "abc"},
            "invalid environment: JANUS_HTTP_PORT: Input should be a valid integer",
        ),
        (
            ["check-config", "--config", str(CONFIG)],
            {"JANUS_LOG_LEVEL": "loud"},
            "JANUS_LOG_LEVEL: unknown level 'LOUD'",
        ),
        (
            ["check-config", "--config", str(CONFIG)],
            {"JANUS_AMQP_URL": "amqp://guest:pw@127.0.0.1:abc/"},
            "amqp_url: invalid port 'abc'",
        ),
        # issue 20: each of these was a traceback (InvalidURL, OverflowError, ValueError)
        (["why", "j", "--url", "http://127.0.0.1:abc"], {}, "cannot reach Janus at http://127.0.0.1:abc"),
        (["scopes", "--url", "http://127.0.0.1:abc"], {}, "nonnumeric port: 'abc'"),
        (
            ["check-config", "--config", str(CONFIG)],
            {"JANUS_HTTP_PORT": "99999"},
            "JANUS_HTTP_PORT: Input should be less than or equal to 65535",
        ),
        (
            ["check-config", "--config", str(CONFIG)],
            {"JANUS_LEADER_LEASE": "1e-9"},
            "JANUS_LEADER_LEASE: Input should be greater than or equal to 0.1",
        ),
        (
            ["check-config", "--config", str(CONFIG)],
            {"JANUS_LEADER_LEASE": "1"},  # renewed every 0.75 s (the default): one slow renewal loses it
            "JANUS_LEADER_RENEW_EVERY (0.75) must be under half of JANUS_LEADER_LEASE (1)",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    complaint: str,
) -> None:
    for name in (
        "JANUS_AMQP_URL",
        "JANUS_AMQP_URL_FILE",
        "JANUS_CONFIG",
        "JANUS_HTTP_PORT",
        "JANUS_LOG_LEVEL",
        "JANUS_LEADER_LEASE",
        "JANUS_LEADER_RENEW_EVERY",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing was submitted
    (line,) = [line for line in captured.err.splitlines() if line.strip()][:1] or [""]
    assert line.startswith("janus: "), captured.err
    assert complaint in captured.err, captured.err
    assert "Traceback" not in captured.err


def test_a_port_out_of_range_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:  # was an OverflowError from bind()
        cli.main(["worker", "--metrics-port", "99999", "api=tests.unit.test_cli:failing_with"])
    assert exited.value.code == 2
    assert "argument --metrics-port: a port is 0..65535, got 99999" in capsys.readouterr().err


def test_config_errors_inside_the_service_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """`janus run` meeting a missing database fails in its supervised tasks: still exit 2."""
    monkeypatch.setitem(
        cli.COMMANDS,
        "migrate",
        failing_with(ExceptionGroup("term", [ConnectionSettingsError("database 'x' does not exist")])),
    )
    assert cli.main(["migrate", "--config", "unused.toml"]) == 2


def run_with_stdout_closed(*argv: str) -> subprocess.CompletedProcess[str]:
    """The command with a pipe for standard output whose reader has already gone (`| head -0`)."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run(
            [sys.executable, "-m", "janus.cli", *argv],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(writer)


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    result = run_with_stdout_closed("check-config", "--config", str(CONFIG))
    assert (result.returncode, result.stderr) == (141, "")


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, default in (
        (["submit", "--help"], "(default: default)"),
        (["scopes", "--help"], "(default: 20)"),
    ):
        with pytest.raises(SystemExit):
            cli.main(argv)
        assert default in capsys.readouterr().out


@pytest.mark.parametrize(
    ("state", "admissions", "failures", "max_attempts", "said"),
    [
        ("waiting", 0, 0, 5, "try 1 of 5 next (last: no admission yet)"),  # never admitted
        # admissions that came back unused cost no try: admission 7 may be its second try
        ("admitted", 7, 1, 5, "try 2 of 5 (admission 7), running"),
        ("waiting", 3, 2, 5, "try 3 of 5 next, after 2 failed tries (last: admission 3)"),
        ("waiting", 3, 1, None, "try 2 next, after 1 failed try (last: admission 3)"),  # no config at hand
        ("succeeded", 4, 0, 5, "succeeded on try 1 of 5 (admission 4)"),
        ("dead", 5, 5, 5, "dead after 5 failed tries of 5 (last: admission 5)"),
    ],
)
def test_jobs_show_separates_tries_from_admissions(
    state: str, admissions: int, failures: int, max_attempts: int | None, said: str
) -> None:
    assert describe_tries(state, admissions, failures, max_attempts) == said


@pytest.mark.parametrize(("count", "said"), [(0, "0 dead jobs"), (1, "1 dead job"), (2, "2 dead jobs")])
def test_plurals(count: int, said: str) -> None:
    assert plural(count, "dead job") == said
