"""The steering commands refuse what makes no sense before they touch the database."""

from __future__ import annotations

import pytest

from janus import cli


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # an override needs a limit, and an end
        (["override", "api", "--for", "5m"], "give --concurrency N and/or --rate-limit"),
        (["override", "api", "--concurrency", "2"], "an override needs --for DURATION"),
        (["override", "api", "--concurrency", "0", "--for", "5m"], "--concurrency must be at least 1"),
        # --clear ends it: no limits with it
        (["override", "api", "--clear", "--concurrency", "2"], "--clear ends the override"),
        # limits and durations are checked as the policy file's are
        (["override", "api", "--rate-limit", "ten/1s", "--for", "5m"], "--rate-limit: invalid rate limit"),
        (["override", "api", "--concurrency", "2", "--for", "soon"], "--for: invalid duration"),
        (["pause", "api", "--for", "0s"], "--for: duration must be positive"),
    ],
)
def test_refused_before_the_database(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JANUS_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1, "one line"
