"""How the command reports failures: Janus's own errors in one line each, anything else in full."""

from __future__ import annotations

import argparse

import pytest

from janus import cli
from janus.config import Settings
from janus.errors import LeadershipLost, StoreError


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
