"""`janus status`: every dependency on one screen, from the leader's /status (the /metrics samples);
in member mode (scale-out), also who leads which dependency, from /status's "owners".

`--watch` redraws it in place with rich's Live display; `--json` prints the answer for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from janus.cli.inspect import ask_leader
from janus.config import Settings

DEFAULT_INTERVAL = 1.0  # seconds between two refreshes of --watch
CHANGES_SHOWN = 5  # the newest policy versions, pauses and overrides, on the screen
SCOPES_SHOWN = 3  # the largest backlogs per dependency, on the screen (--json has all /status gives)


def add_parsers(commands: Any) -> None:
    status = commands.add_parser("status", help="every dependency at a glance: rates, slots, waits, state")
    status.add_argument(
        "--url", help="a Janus process's HTTP address (default: http://$JANUS_HTTP_HOST:$JANUS_HTTP_PORT)"
    )
    status.add_argument("--json", action="store_true", help="print the raw JSON answer")
    status.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    status.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        help="seconds between refreshes with --watch (default: %(default)s)",
    )


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.0f}m"


def _rate(lane: dict[str, Any]) -> str:
    return ", ".join(f"{r['used']}/{r['limit']}" for r in lane["rates"]) or "no limit"


def _why(lane: dict[str, Any]) -> str:
    blocked = lane["blocked"]
    if blocked is None:
        return ""
    lifts = blocked["lifts_in_seconds"]
    return str(blocked["limit"]) + (f", lifts in {lifts:.1f}s" if lifts is not None else "")


def _until(until: float | None, now: float) -> str:
    if until is None:
        return "until resumed"
    return f"until {datetime.fromtimestamp(until, UTC):%H:%M:%S} UTC (in {_seconds(max(0.0, until - now))})"


def _steering(lane: dict[str, Any], now: float) -> str:
    """An operator's pause and override in force (`janus pause`, `janus override`)."""
    steering = lane.get("steering") or {}
    parts = []
    for kind, verb in (("pause", "paused"), ("override", "overridden")):
        hand = steering.get(kind)
        if hand is not None:
            parts.append(f"{verb} by {hand['by']} {_until(hand['until'], now)}")
    return "; ".join(parts)


def _reasons(lane: dict[str, Any]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in lane["waiting_by_reason"].items())


def _scopes(lane: dict[str, Any]) -> str:
    shown = lane["top_scopes"][:SCOPES_SHOWN]
    return ", ".join(f"{s['scope']} {s['waiting'] or 0}w/{s['held'] or 0}h" for s in shown)


def change_line(change: dict[str, Any]) -> str:
    """One recent change: when, what, who and why (`janus history` has them all)."""
    at = change.get("at")
    when = f"{datetime.fromtimestamp(at, UTC):%Y-%m-%d %H:%M:%S}Z" if at is not None else "?"
    if change["what"] == "version":
        what = f"version {change['version']}"
    else:
        what = f"{change['what']} {change['dependency']}"
        if change["detail"]:
            what += f" ({change['detail']})"
        if change["what"] in ("pause", "override"):
            until = change["until"]
            what += (
                " until resumed"
                if until is None
                else f" until {datetime.fromtimestamp(until, UTC):%H:%M:%S}Z"
            )
    by = change["actor"] + (f": {change['reason']}" if change["reason"] else "")
    return f"{when}  {what}  by {by}" + ("" if change["applied"] else "  (pending)")


STATE_STYLES = {"ok": "green", "throttled": "yellow", "circuit half-open": "yellow", "overridden": "yellow"}


def render(body: dict[str, Any]) -> Any:
    """The screen: a rich renderable (a table of the dependencies, or who leads)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    about = body["process"]
    owners = owners_tables(body.get("owners"))
    if not about["leading"]:
        standby = Text(standby_line(body))
        return standby if not owners else Group(standby, *owners)
    title = f"Janus, leading in epoch {about['epoch']}"
    lag = about.get("event_loop_lag_seconds")
    if lag is not None:
        title += f" (event loop lag {lag * 1000:.0f} ms)"
    table = Table(title=title, title_justify="left", expand=False)
    for column, justify in (
        ("dependency", "left"),
        ("state", "left"),
        ("rate used/limit", "right"),
        ("held/cap", "right"),
        ("waiting", "right"),
        ("oldest", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    details = []
    for lane in body["dependencies"]:
        cap = lane["concurrency"]
        table.add_row(
            lane["dependency"],
            Text(lane["state"], style=STATE_STYLES.get(lane["state"], "bold red")),
            _rate(lane),
            f"{lane['held']}/{cap if cap is not None else '-'}",
            str(lane["waiting"]),
            _seconds(lane["oldest_waiting_seconds"]),
        )
        # What does not fit a column: under the table, one paragraph per dependency that waits.
        parts = [
            _steering(lane, body["time"]),
            adaptive_line(lane["adaptive"]) if lane.get("adaptive") else "",
            f"held back by {_why(lane)}" if lane["blocked"] else "",
            f"waiting: {_reasons(lane)}" if lane["waiting_by_reason"] else "",
            f"top scopes (waiting/held): {_scopes(lane)}" if lane["top_scopes"] else "",
        ]
        if any(parts):
            details.append(Text(f"{lane['dependency']}: " + "; ".join(p for p in parts if p)))
    changes = body.get("recent_changes") or []
    if changes:
        details.append(Text("recent changes (janus history has them all):"))
        details.extend(Text("  " + change_line(change)) for change in changes[:CHANGES_SHOWN])
    return Group(table, *details, *owners)


def _short(member: str | None) -> str:
    """A member's id as the screen shows it: the first block of its UUID (--json has all)."""
    return "-" if member is None else member.split("-", 1)[0]


def _lease_left(lease: dict[str, Any], now: float) -> str:
    if lease["live"]:
        return _seconds(lease["lease_left_seconds"])
    since = lease.get("since")
    return "expired" + (f" {_seconds(max(0.0, now - since))} ago" if since is not None else "")


def owners_tables(owners: dict[str, Any] | None) -> list[Any]:
    """Member mode (scale-out): who leads which dependency and the live members, as the last
    read of the database shows them. Nothing when no process is a member (a single leader)."""
    from rich.table import Table
    from rich.text import Text

    if not owners or not (owners["members"] or owners["dependencies"]):
        return []
    now = owners["as_of"]
    leads = Table(
        title=f"who leads which dependency (read {owners['read_seconds_ago']:.1f}s ago)",
        title_justify="left",
    )
    for column in ("dependency", "owner", "host", "epoch", "lease left"):
        leads.add_column(column, justify="right" if column in ("epoch", "lease left") else "left")
    rows = [(lease["dependency"], lease) for lease in owners["dependencies"]]
    rows += [(name, None) for name in owners["unowned"] if name not in {d for d, _ in rows}]
    for name, lease in sorted(rows, key=lambda row: row[0]):
        if lease is None:
            leads.add_row(name, Text("nobody", style="bold red"), "-", "-", "-")
            continue
        owner = _short(lease["member"]) + ("" if lease["member_live"] else " (gone)")
        leads.add_row(
            name,
            Text(owner, style="" if lease["live"] else "bold red"),
            lease["host"] or "-",
            str(lease["epoch"]),
            _lease_left(lease, now),
        )
    members = Table(title=f"members ({len(owners['members'])} live)", title_justify="left")
    for column in ("member", "host", "up", "heartbeat", "leads"):
        members.add_column(column, justify="right" if column in ("up", "heartbeat") else "left")
    this = owners.get("this_member")
    for member in owners["members"]:
        members.add_row(
            _short(member["member"]) + (" (this process)" if member["member"] == this else ""),
            member["host"] or "-",
            _seconds(max(0.0, now - member["started_at"])),
            f"{_seconds(member['heartbeat_age_seconds'])} ago",
            ", ".join(member["dependencies"]) or "nothing (standing by)",
        )
    return [leads, members]


ADAPTIVE_MOVES = {
    "throttled": "lowered after throttled results",
    "clean": "raised after a clean round",
    "latency_rise": "lowered as latency rose",
    "latency_floor": "raised with latency near its floor",
}


def adaptive_line(adaptive: dict[str, Any]) -> str:
    """ "adaptive rate 38/1s, concurrency 12, lowered 2 s ago after throttled results"."""
    limits = []
    if adaptive.get("rate") is not None:
        limits.append(f"rate {adaptive['rate']:.3g}/1s")
    if adaptive.get("concurrency") is not None:
        limits.append(f"concurrency {adaptive['concurrency']:g}")
    line = "adaptive " + ", ".join(limits)
    signal, ago = adaptive.get("signal"), adaptive.get("changed_seconds_ago")
    if signal in ADAPTIVE_MOVES and ago is not None:
        verb, _, cause = ADAPTIVE_MOVES[signal].partition(" ")
        line += f", {verb} {ago:.0f} s ago {cause}"
    return line


def standby_line(body: dict[str, Any]) -> str:
    leader = body.get("leader")
    if not leader:
        return "this process does not lead, and no leader is recorded in the database"
    if "error" in leader:
        return f"this process does not lead; {leader['error']}"
    where = f" on {leader['address']}" if leader.get("address") else ""
    state = "leads" if leader["live"] else "held the lease last (it has expired: no leader now)"
    return (
        f"this process does not lead: {leader['identity']}{where} {state} in epoch {leader['epoch']}; "
        "ask it with --url"
    )


async def status(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    if args.json:
        print(json.dumps(ask_leader(args, settings, "/status"), indent=2))
        return 0
    console = Console()
    if not args.watch:
        console.print(render(ask_leader(args, settings, "/status")))
        return 0
    from rich.live import Live

    body = await asyncio.to_thread(ask_leader, args, settings, "/status")
    with Live(render(body), console=console, auto_refresh=False) as live:
        try:
            while True:
                await asyncio.sleep(max(0.1, args.interval))
                body = await asyncio.to_thread(ask_leader, args, settings, "/status")
                live.update(render(body), refresh=True)
        except (KeyboardInterrupt, asyncio.CancelledError):
            return 0
