"""`janus jobs show` and `janus jobs retry`: a job's tries and errors; dead jobs given another life."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from janus.cli.common import config_of, database_url_of, has_config, plural, with_config
from janus.config import Settings, format_duration
from janus.errors import JanusError

EXIT_NOT_YET = 3  # `jobs retry`: recorded, but no leader applied it within --wait


def add_parsers(commands: Any) -> None:
    jobs = commands.add_parser("jobs", help="a job's tries and errors; retry dead jobs")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    retry = with_config(
        jobs_commands.add_parser(
            "retry", help="give dead jobs another life: eligible again, with no failed tries"
        )
    )
    retry.add_argument("job_id", nargs="?", help="one dead job")
    retry.add_argument("--dependency", help="every dead job of this dependency")
    retry.add_argument("--scope", help="every dead job of this scope")
    retry.add_argument(
        "--wait", type=float, default=10.0, help="seconds to wait for the leader (default: %(default)s)"
    )
    show = with_config(jobs_commands.add_parser("show", help="a job's state, its tries and its errors"))
    show.add_argument("job_id")


def describe_tries(state: str, admissions: int, failures: int, max_attempts: int | None) -> str:
    """A job's tries in its current life (failed ones + 1, of max_attempts) and, apart, the
    admission sequence (which also counts admissions no worker took: they cost no try)."""
    of = f" of {max_attempts}" if max_attempts is not None else ""
    last = f"admission {admissions}" if admissions else "no admission yet"
    if state == "waiting":
        after = f", after {plural(failures, 'failed try', 'failed tries')}" if failures else ""
        return f"try {failures + 1}{of} next{after} (last: {last})"
    if state == "admitted":
        return f"try {failures + 1}{of} ({last}), running"
    if state == "succeeded":
        return f"succeeded on try {failures + 1}{of} ({last})"
    if state == "dead":
        return f"dead after {plural(failures, 'failed try', 'failed tries')}{of} (last: {last})"
    return f"{plural(failures, 'failed try', 'failed tries')} (last: {last})"


def not_stored(job_id: str, args: argparse.Namespace, settings: Settings) -> str:
    """What Janus can say of a job it has no row for: it cannot tell "never" from "pruned"."""
    kept = ""
    if has_config(args, settings):
        config = config_of(args, settings)
        kept = (
            f" (succeeded jobs are kept {format_duration(config.retention.succeeded)}, "
            f"dead ones {format_duration(config.retention.dead)}, unless a dependency says otherwise)"
        )
    return f"{job_id}: not stored: never submitted, or finished and pruned after its retention{kept}"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def show(args: argparse.Namespace, settings: Settings) -> int:
    """A job's state, its tries and its error history (every failed try, in every life)."""
    from janus.store.repository import Store

    max_attempts: int | None = None
    store = await Store.connect(database_url_of(args, settings), application_name="janus-cli")
    try:
        state = await store.job_state(args.job_id)
        history = await store.error_history(args.job_id) if state is not None else []
    finally:
        await store.close()
    if state is None:
        print(not_stored(args.job_id, args, settings))  # an answer, not an error: retention is normal
        return 0
    if has_config(args, settings):
        policy = config_of(args, settings).dependencies.get(str(state["dependency"]))
        max_attempts = policy.retry.max_attempts if policy is not None else None
    admissions, failures = state["attempt"], state["failures"]
    assert isinstance(admissions, int)
    assert isinstance(failures, int)
    tries = describe_tries(str(state["state"]), admissions, failures, max_attempts)
    print(
        f"{args.job_id}: {state['state']}; dependency {state['dependency']}, scope {state['scope']}; {tries}"
    )
    if history:
        print("  failed tries, by admission (a `janus jobs retry` starts a new life, with no failed tries):")
    for failure in history:
        print(f"  admission {failure.attempt} at {_iso(failure.failed_at)}: {failure.error}")
    return 0


async def retry(args: argparse.Namespace, settings: Settings) -> int:
    """Ask the leader to make dead jobs eligible again, with their failed tries reset."""
    from janus.store.repository import Store

    if (args.job_id is None) == (args.dependency is None and args.scope is None):
        raise JanusError("give either JOB_ID, or --dependency and/or --scope (all their dead jobs)")
    store = await Store.connect(database_url_of(args, settings), application_name="janus-cli")
    try:
        if args.job_id is not None:
            state = await store.job_state(args.job_id)
            if state is None:
                raise JanusError(f"{not_stored(args.job_id, args, settings)}: nothing to retry")
            if state["state"] != "dead":
                raise JanusError(f"job {args.job_id!r} is {state['state']}, not dead: nothing to retry")
        request, matching = await store.request_retry(
            job_id=args.job_id, dependency=args.dependency, scope=args.scope
        )
        what = args.job_id or " ".join(
            f"{key} {value}"
            for key, value in (("dependency", args.dependency), ("scope", args.scope))
            if value
        )
        print(f"retry request {request} recorded for {what}: {plural(matching, 'dead job')} match now")
        deadline = time.monotonic() + args.wait
        while True:
            revived = await store.retry_request_status(request)
            if revived is not None:
                print(f"the leader made {plural(revived, 'dead job')} eligible again")
                return 0
            if time.monotonic() >= deadline:
                print(
                    f"no leader applied it within {args.wait:g} s: the next one will (it is kept in the database)"
                )
                return EXIT_NOT_YET
            await asyncio.sleep(0.2)
    finally:
        await store.close()
