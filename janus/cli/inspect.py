"""`janus scopes` and `janus why`: the running leader's answers (only it knows the live state)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from janus.cli.common import lifts_in, plural
from janus.config import Settings
from janus.errors import JanusError

DEFAULT_TOP = 20


def add_parsers(commands: Any) -> None:
    scopes = commands.add_parser("scopes", help="per dependency, the scopes with the largest backlogs")
    scopes.add_argument("--dependency", help="only this dependency (default: every one)")
    scopes.add_argument(
        "--top",
        type=int,
        default=DEFAULT_TOP,
        help="scopes per dependency, up to 200 (default: %(default)s)",
    )
    scopes.add_argument(
        "--offset", type=int, default=0, help="skip the largest N backlogs first (default: 0)"
    )
    why = commands.add_parser("why", help="why a job waits: which limit, which scopes go first")
    why.add_argument("job_id")
    for inspecting in (scopes, why):
        inspecting.add_argument(
            "--url", help="the leader's HTTP address (default: http://$JANUS_HTTP_HOST:$JANUS_HTTP_PORT)"
        )
        inspecting.add_argument("--json", action="store_true", help="print the raw JSON answer")


def ask_leader(args: argparse.Namespace, settings: Settings, path: str) -> dict[str, Any]:
    """GET a JSON answer from the leader's HTTP endpoint."""
    import http.client
    import urllib.error
    import urllib.request

    base = args.url or f"http://{settings.http_host}:{settings.http_port}"
    try:
        with urllib.request.urlopen(base.rstrip("/") + path, timeout=10) as response:
            body: dict[str, Any] = json.load(response)
            return body
    except urllib.error.HTTPError as exc:
        try:
            error = json.load(exc).get("error", exc.reason)
        except ValueError:
            error = exc.reason
        raise JanusError(f"{base}: {error}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        # HTTPException: a URL like http://host:abc (InvalidURL), or an answer that is not HTTP.
        raise JanusError(f"cannot reach Janus at {base}: {exc}") from None


def _reason(reason: dict[str, Any]) -> str:
    return str(reason["detail"]) + lifts_in(reason.get("until"))


async def scopes(args: argparse.Namespace, settings: Settings) -> int:
    from urllib.parse import urlencode

    query = {"top": str(args.top)} | ({"dependency": args.dependency} if args.dependency else {})
    if args.offset:
        query["offset"] = str(args.offset)
    body = ask_leader(args, settings, f"/scopes?{urlencode(query)}")
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    if "note" in body:
        print(f"({body['note']})")
    for lane in body["dependencies"]:
        blocked = "; ".join(_reason(r) for r in lane["blocked"]) or "not blocked"
        print(
            f"{lane['dependency']}: {plural(lane['eligible_scopes'], 'scope')} eligible, "
            f"{lane['ready']} ready, {lane['stored']} stored, {lane['delayed']} backing off, "
            f"{lane['held']} held; {blocked}"
        )
        print(f"  {'scope':<32} {'waiting':>8} {'held':>6} {'admitted':>9} {'oldest':>9}")
        for scope in lane["scopes"]:
            oldest = scope["oldest_waiting_seconds"]
            age = f"{oldest:.1f}s" if oldest is not None else "-"
            print(
                f"  {scope['scope']:<32} {scope['waiting']:>8} {scope['held']:>6} {scope['admitted']:>9} {age:>9}"
            )
    return 0


async def why(args: argparse.Namespace, settings: Settings) -> int:
    from urllib.parse import quote

    body = ask_leader(args, settings, f"/why/{quote(args.job_id, safe='')}")
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    print(f"{body['job_id']}: {body['state']} ({body['dependency']}, scope {body['scope']})")
    reasons = body.get("waits_for")
    if reasons is None:
        print("  not waiting")
    elif not reasons:
        print("  nothing holds it back: it goes at the next tick")
    for reason in reasons or []:
        print(f"  waits for {reason['reason']}: {_reason(reason)}")
    return 0
