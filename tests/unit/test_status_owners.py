"""Who leads which dependency (scale-out, issue 21) on `janus status`, in /status and in /readyz:
the screen and the JSON from an "owners" answer, and a member's readiness rule. The answers
read from real PostgreSQL rows are tested in tests/integration/test_owners.py."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from janus.api.http import serve
from janus.api.status import StatusBoard, picture
from janus.cli.status import render
from janus.service.health import Health, MemberView, Role, member_readiness
from tests.unit.test_metrics import free_port, get
from tests.unit.test_status import leader_metrics

A, B = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"


def owners() -> dict[str, Any]:
    return {
        "as_of": 2000.0,
        "read_seconds_ago": 0.4,
        "this_member": B,
        "members": [
            {
                "member": A,
                "host": "node-1",
                "started_at": 1880.0,
                "heartbeat_age_seconds": 0.3,
                "expires_in_seconds": 2.7,
                "dependencies": ["api"],
            },
            {
                "member": B,
                "host": "node-2",
                "started_at": 1990.0,
                "heartbeat_age_seconds": 0.1,
                "expires_in_seconds": 2.9,
                "dependencies": [],
            },
        ],
        "dependencies": [
            {
                "dependency": "api",
                "member": A,
                "host": "node-1",
                "epoch": 4,
                "live": True,
                "member_live": True,
                "since": 1900.0,
                "lease_left_seconds": 2.5,
            },
            {
                "dependency": "mail",
                "member": "cccccccc-0000-4000-8000-000000000003",
                "host": "node-3",
                "epoch": 9,
                "live": False,
                "member_live": False,
                "since": 1996.0,
                "lease_left_seconds": 0.0,
            },
        ],
        "unowned": ["mail", "sms"],
    }


def screen(body: dict[str, Any]) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, color_system=None)
    console.print(render(body))
    return console.export_text()


def test_the_screen_says_who_leads_which_dependency_and_lists_the_members() -> None:
    body = picture(leader_metrics().registry, now=2000.0) | {"owners": owners()}
    text = screen(body)
    assert "who leads which dependency (read 0.4s ago)" in text
    lines = text.splitlines()
    api = next(line for line in lines if " api " in line and "aaaaaaaa" in line)
    for shown in ("node-1", " 4 ", "2.5s"):
        assert shown in api
    mail = next(line for line in lines if "cccccccc" in line)
    assert "(gone)" in mail
    assert "expired 4.0s ago" in mail
    sms = next(line for line in lines if " sms " in line)
    assert "nobody" in sms
    assert "members (2 live)" in text
    member_b = next(line for line in lines if "bbbbbbbb" in line)
    assert "bbbbbbbb (this process)" in member_b
    assert "node-2" in member_b
    assert "nothing (standing by)" in member_b
    member_a = next(line for line in lines if "aaaaaaaa" in line and "0.3s ago" in line)
    assert " 2m " in member_a
    # The dependencies' own table is still there, above.
    assert text.index("epoch 7") < text.index("who leads which dependency")
    # A process that does not hold the global lease shows the owners under its standby line.
    standby = {"process": {"leading": False}, "leader": None, "owners": owners()}
    text = screen(standby)
    assert "no leader is recorded" in text
    assert "who leads which dependency" in text


def test_without_members_the_screen_is_unchanged() -> None:
    body = picture(leader_metrics().registry, now=2000.0)
    empty = owners() | {"members": [], "dependencies": [], "unowned": ["api", "mail"]}
    assert screen(body | {"owners": empty}) == screen(body)
    assert "who leads" not in screen(body)
    standby = {"process": {"leading": False}, "leader": None}
    assert screen(standby | {"owners": empty}) == screen(standby)


async def test_status_json_adds_owners_and_keeps_every_other_key() -> None:
    metrics = leader_metrics()
    loop = asyncio.get_running_loop()
    answer: list[dict[str, Any] | None] = [None]
    port = free_port()
    board = StatusBoard(metrics.registry, loop, owners=lambda: answer[0])
    server = serve("127.0.0.1", port, metrics.registry, loop, lambda: (True, {}), status=board)
    try:
        status, text = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/status")
        before = json.loads(text)
        assert status == 200
        assert "owners" not in before  # nothing read yet (or a single leader): as before
        answer[0] = owners()
        status, text = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/status")
        after = json.loads(text)
        assert after["owners"] == owners()
        assert set(after) == set(before) | {"owners"}
        assert after["dependencies"] == before["dependencies"]
        # A standby's answer, which also says who holds the global lease, gets it too.
        metrics.is_leader.set(0)
        status, text = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/status")
        assert json.loads(text)["owners"] == owners()
    finally:
        server.close()


def view(**changes: Any) -> MemberView:
    base: dict[str, Any] = {
        "member": A,
        "read_age": 0.5,
        "live": True,
        "heartbeat_age": 0.2,
        "share": ("api", "mail"),
        "held": {"api": 3, "mail": 1},
        "admitting": {"api": 3, "mail": 1},
    }
    return MemberView(**(base | changes))


def test_a_member_is_ready_when_it_heartbeats_and_holds_its_share() -> None:
    ready, body = member_readiness(view(), fresh_within=2.0)
    assert ready
    assert body["detail"] == "holds its share"
    assert body["held"] == {"api": 3, "mail": 1}
    assert member_readiness(view(share=(), held={}, admitting={}), 2.0)[0], "nothing assigned: a standby"
    assert member_readiness(view(admitting=None), 2.0)[0], "not told what it admits: the leases decide"
    # Holding more than its share (a handover away still to do) is ready: it admits for it.
    assert member_readiness(view(share=("api",)), 2.0)[0]
    for changes, detail in (
        ({"read_age": 2.5}, "the members were last read 2.5s ago"),
        ({"live": False}, "its member row is not live in the database"),
        ({"held": {"api": 3}}, "not yet holding its share: mail"),
        ({"admitting": {"api": 3}}, "not yet admitting for mail"),
        ({"admitting": {"api": 2, "mail": 1}}, "not yet admitting for api"),  # an older epoch's lane
    ):
        ready, body = member_readiness(view(**changes), 2.0)
        assert not ready, changes
        assert body["detail"] == detail
    assert member_readiness(None, 2.0) == (False, {"detail": "no read of the members yet"})


def test_health_uses_the_member_rule_only_when_given_a_member_view() -> None:
    single = Health(identity=uuid.uuid4(), standby_fresh_within=2.0)
    single.become(Role.LEADING, epoch=2)
    ready, body = single.readiness()
    assert ready
    assert "mode" not in body
    assert "member" not in body
    seen: list[MemberView | None] = [view(held={"api": 3})]
    member = Health(identity=uuid.uuid4(), standby_fresh_within=2.0, member_view=lambda: seen[0])
    member.become(Role.LEADING, epoch=2)
    ready, body = member.readiness()
    assert not ready, "leading the global lease is not enough for a member without its share"
    assert body["mode"] == "member"
    assert body["member"]["detail"] == "not yet holding its share: mail"
    seen[0] = view()
    member.become(Role.STANDBY)
    assert member.readiness()[0], "a member holding its share is ready without the global lease"
    for role in (Role.STARTING, Role.RECOVERING, Role.STOPPING):
        member.become(role)
        assert not member.readiness()[0], role
