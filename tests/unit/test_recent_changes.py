"""The recent changes as the leader copies them from the history (janus/service/changes.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from janus.service.changes import DIFF_LINES, describe
from janus.store.steering import Change


def change(what: str, **fields: object) -> Change:
    values: dict[str, object] = {
        "what": what,
        "id": 4,
        "dependency": None,
        "kind": None,
        "until": None,
        "concurrency": None,
        "rate_limits": None,
        "actor": "alice",
        "reason": None,
        "diff": None,
        "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "applied_at": None,
    }
    values.update(fields)
    return Change(**values)  # type: ignore[arg-type]


def test_a_steering_row_says_what_it_set_and_until_when() -> None:
    row = change(
        "steering",
        dependency="api",
        kind="override",
        until=1800.0,
        concurrency=2,
        rate_limits=("5/1s",),
        reason="drill",
        applied_at=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
    )
    assert describe(row) == {
        "what": "override",
        "version": None,
        "dependency": "api",
        "actor": "alice",
        "reason": "drill",
        "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp(),
        "until": 1800.0,
        "detail": "concurrency 2, rate 5/1s",
        "applied": True,
    }
    assert describe(change("steering", dependency="api", kind="pause"))["detail"] == ""
    assert describe(change("steering", dependency="api", kind="override", rate_limits=()))["detail"] == (
        "rate unlimited"
    )


def test_a_version_carries_its_diff_cut_short() -> None:
    short = describe(change("version", diff="- a\n+ b"))
    assert (short["what"], short["version"], short["detail"], short["applied"]) == (
        "version",
        4,
        "- a\n+ b",
        False,
    )
    long = describe(change("version", diff="\n".join(f"+ line {n}" for n in range(DIFF_LINES + 5))))
    lines = long["detail"].splitlines()
    assert len(lines) == DIFF_LINES + 1
    assert lines[-1] == "... 5 more"
