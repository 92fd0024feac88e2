"""`janus apply`, `pause`, `resume`, `override` and `history`: steering a running Janus live.

Each command writes a row to PostgreSQL and waits until the leader has applied it (it marks
the row in a fenced transaction: service/steer.py); with no leader, the change is stored and
pending, and the next leader applies it. Only the database is needed (`--config` or
`JANUS_DATABASE_URL`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from janus.cli.common import config_of, database_url_of, with_config
from janus.config import Settings, parse_duration, parse_limit_entry
from janus.errors import ConfigError, JanusError

if TYPE_CHECKING:
    from janus.store.steering import PolicyLog

EXIT_NOT_YET = 3  # stored, but the leader did not apply it within --wait


def add_parsers(commands: Any) -> None:
    apply = with_config(
        commands.add_parser("apply", help="make a policy file the policy of record, live (a new version)")
    )
    _common(apply)
    pause = with_config(commands.add_parser("pause", help="admit nothing of a dependency until resumed"))
    pause.add_argument("dependency")
    pause.add_argument("--for", dest="lasts", help="resume by itself after this long, e.g. 10m")
    _common(pause)
    resume = with_config(commands.add_parser("resume", help="end a pause of a dependency"))
    resume.add_argument("dependency")
    _common(resume)
    override = with_config(
        commands.add_parser("override", help="replace a dependency's limits for a while (an incident lever)")
    )
    override.add_argument("dependency")
    override.add_argument("--concurrency", type=int, help="at most N held at once")
    override.add_argument(
        "--rate-limit",
        action="extend",
        nargs="+",
        dest="rate_limits",
        metavar="COUNT/DUR",
        help="rate limits, all of which must hold (instead of the policy's)",
    )
    override.add_argument("--for", dest="lasts", help="how long it lasts, e.g. 15m (required unless --clear)")
    override.add_argument("--clear", action="store_true", help="end the override now")
    _common(override)
    history = with_config(commands.add_parser("history", help="every policy version, pause and override"))
    history.add_argument("--dependency", help="only the changes of this dependency")


def _common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--reason", help="why (kept in the history, shown by `janus why`)")
    sub.add_argument("--actor", help="who (default: the OS user)")
    sub.add_argument(
        "--wait", type=float, default=10.0, help="seconds to wait for the leader (default: %(default)s)"
    )


def _actor(args: argparse.Namespace) -> str:
    from janus.service.steer import os_user

    return str(args.actor) if args.actor else os_user()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _await_leader(
    applied: Callable[[], Awaitable[bool]], alive: Callable[[], Awaitable[bool]], wait: float, what: str
) -> int:
    """Until the leader has applied it: 0; none leads: pending, 0; a leader, but not in time: 3."""
    if not await alive():
        print(f"no leader is running: {what} is pending; the next leader applies it")
        return 0
    deadline = time.monotonic() + wait
    while not await applied():
        if time.monotonic() >= deadline:
            print(
                f"the leader did not apply {what} within {wait:g} s: it is kept, the leader applies it later"
            )
            return EXIT_NOT_YET
        await asyncio.sleep(0.05)
    print(f"the leader applied {what}")
    return 0


async def apply(args: argparse.Namespace, settings: Settings) -> int:
    """Validate the file as check-config does, store it as the next version, wait for the leader."""
    from janus.policy_record import diff, record_of
    from janus.store.repository import Store

    config = config_of(args, settings)  # an invalid file: the error, non-zero, nothing stored
    record = record_of(config)
    store = await Store.connect(database_url_of(args, settings), application_name="janus-cli")
    try:
        await store.migrate()
        policy_log = store.policy_log
        actor = _actor(args)
        version, changes = await policy_log.record_version(
            record, actor, args.reason, lambda old: diff(old, record)
        )
        if changes == "no change":
            print(f"the file is version {version}, the policy of record: nothing stored")
            return 0
        print(f"version {version} stored by {actor}" + (f": {args.reason}" if args.reason else ""))
        for line in changes.splitlines():
            print(f"  {line}")

        async def runs_it() -> bool:
            running = await policy_log.running_version()
            return running is not None and running >= version

        return await _await_leader(runs_it, policy_log.leader_alive, args.wait, f"version {version}")
    finally:
        await store.close()


async def _steer(
    args: argparse.Namespace,
    settings: Settings,
    kind: str,
    lasts: float | None,
    concurrency: int | None = None,
    rate_limits: list[str] | None = None,
) -> int:
    from janus.store.repository import Store

    store = await Store.connect(database_url_of(args, settings), application_name="janus-cli")
    try:
        await store.migrate()
        policy_log = store.policy_log
        await _known(policy_log, args.dependency)
        actor = _actor(args)
        row, until = await policy_log.record_steering(
            dependency=args.dependency,
            kind=kind,
            lasts=lasts,
            concurrency=concurrency,
            rate_limits=rate_limits,
            actor=actor,
            reason=args.reason,
        )
        ends = f" until {_iso(until)}" if until is not None else ""
        print(
            f"{kind} of {args.dependency} recorded by {actor}{ends}"
            + (f": {args.reason}" if args.reason else "")
        )
        return await _await_leader(
            lambda: policy_log.steering_applied(row), policy_log.leader_alive, args.wait, f"the {kind}"
        )
    finally:
        await store.close()


async def _known(policy_log: PolicyLog, dependency: str) -> None:
    """The dependency must be in the policy of record (when there is one)."""
    newest = await policy_log.newest()
    if newest is not None and dependency not in json.loads(newest.policy).get("dependencies", {}):
        raise JanusError(f"no dependency {dependency!r} in the policy of record (version {newest.version})")


def _lasts(value: str | None, option: str = "--for") -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None


async def pause(args: argparse.Namespace, settings: Settings) -> int:
    return await _steer(args, settings, "pause", _lasts(args.lasts))


async def resume(args: argparse.Namespace, settings: Settings) -> int:
    return await _steer(args, settings, "resume", None)


async def override(args: argparse.Namespace, settings: Settings) -> int:
    if args.clear:
        if args.concurrency is not None or args.rate_limits or args.lasts:
            raise JanusError("--clear ends the override: give no limits and no --for with it")
        return await _steer(args, settings, "clear", None)
    if args.concurrency is None and not args.rate_limits:
        raise JanusError("give --concurrency N and/or --rate-limit COUNT/DUR (or --clear)")
    if args.concurrency is not None and args.concurrency < 1:
        raise JanusError("--concurrency must be at least 1")
    if args.lasts is None:
        raise JanusError("an override needs --for DURATION: it ends by itself")
    for limit in args.rate_limits or ():
        try:
            parsed = parse_limit_entry(limit)
        except ValueError as exc:
            raise ConfigError(f"--rate-limit: {exc}") from None
        if parsed.units:  # the unit limits stay the policy's (an override replaces job counts)
            raise ConfigError(f"--rate-limit: {limit!r}: an override sets job counts, not units")
    return await _steer(args, settings, "override", _lasts(args.lasts), args.concurrency, args.rate_limits)


async def history(args: argparse.Namespace, settings: Settings) -> int:
    """Every change, oldest first: who, when, why and what."""
    from janus.store.repository import Store

    store = await Store.connect(database_url_of(args, settings), application_name="janus-cli")
    try:
        await store.migrate()
        changes = await store.policy_log.history(args.dependency)
        running = await store.policy_log.running_version()
    finally:
        await store.close()
    for change in changes:
        when = change.created_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        by = change.actor + (f": {change.reason}" if change.reason else "")
        state = "applied" if change.applied_at is not None else "pending"
        if change.what == "version":
            print(f"{when}  version {change.id}  by {by}  ({state})")
            for line in (change.diff or "").splitlines():
                print(f"    {line}")
            continue
        what = f"{change.kind} {change.dependency}"
        if change.concurrency is not None:
            what += f" concurrency {change.concurrency}"
        if change.rate_limits:
            what += " rate " + ", ".join(change.rate_limits)
        if change.until is not None:
            what += f" until {_iso(change.until)}"
        print(f"{when}  {what}  by {by}  ({state})")
    print(f"the leader runs version {running}" if running is not None else "no version has run yet")
    return 0
