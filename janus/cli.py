"""The `janus` command: run, migrate, check-config, broker-upgrade, submit, scopes, why, jobs retry / jobs show, demo, conformance, simulate."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from janus.config import JanusConfig, Settings, describe_rate_limits, load_config
from janus.conformance import cli as conformance_cli
from janus.errors import JanusError
from janus.simulate import command as simulate_command


def _run(coroutine: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # uvloop is optional: plain asyncio works, slower
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def _config(args: argparse.Namespace, settings: Settings) -> JanusConfig:
    path = args.config or settings.config
    if path is None:
        raise JanusError("no configuration: pass --config PATH or set JANUS_CONFIG")
    return load_config(Path(path))


async def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from janus.api.http import serve
    from janus.service.app import Service, ServiceOptions, install_signal_handlers
    from janus.service.gc_pauses import tune_for_run

    config = _config(args, settings)
    tune_for_run()
    options = ServiceOptions.from_settings(settings)
    service = Service(config, options)
    server = None
    if options.serve_metrics:
        server = serve(
            settings.http_host,
            settings.http_port,
            service.metrics.registry,
            asyncio.get_running_loop(),
            service.health.readiness,
            inspector=service.inspector,
        )
    install_signal_handlers(service)
    try:
        await service.run()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return 0


async def _cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from janus.store.repository import Store

    config = _config(args, settings)
    store = await Store.connect(config.database_url)
    try:
        applied = await store.migrate()
    finally:
        await store.close()
    print(f"applied migrations: {applied}" if applied else "schema is up to date")
    return 0


async def _cmd_broker_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    """Once, when upgrading from a Janus whose janus.results was a fanout (docs/protocol.md)."""
    from janus.broker import connection as broker
    from janus.broker import topology

    config = _config(args, settings)
    connection = await broker.connect(config.amqp_url, name="janus-broker-upgrade")
    try:
        deleted = await topology.upgrade_results_exchange(connection)
        declared = await topology.declare_topology(connection, [p.name for p in config.policies()])
    finally:
        await broker.close(connection)
    print(f"deleted: {', '.join(deleted) or 'nothing'}; declared: {', '.join(declared) or 'nothing'}")
    return 0


async def _cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    config = _config(args, settings)
    for policy in config.policies():
        limits = ", ".join(str(limit) for limit in policy.rate_limits) or "no rate limit"
        concurrency = policy.concurrency if policy.concurrency is not None else "unlimited"
        print(
            f"{policy.name}: {limits}; concurrency {concurrency}; lease {policy.lease_timeout:g}s; "
            f"admission ttl {policy.admission_ttl:g}s; up to {policy.retry.max_attempts} attempts"
        )
        for line in describe_rate_limits(policy):
            print(f"  {line}")
        retry, circuit = policy.retry, policy.circuit
        opens = (
            f"circuit opens at {circuit.failure_threshold:.0%} failed of >= {circuit.min_outcomes} outcomes "
            f"in {circuit.window:g}s, for {circuit.open_for:g}s..{circuit.max_open_for:g}s, "
            f"{circuit.half_open_probes} probes"
            if circuit.enabled
            else "no circuit"
        )
        print(
            f"  retries <= {retry.budget:.0%} of admissions per {retry.budget_window:g}s "
            f"(at least {retry.min_retries}); retry_after up to {retry.max_retry_after:g}s; {opens}"
        )
    print("configuration is valid")
    return 0


async def _cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from janus.client.producer import Producer

    url = settings.amqp_url or (
        _config(args, settings).amqp_url if (args.config or settings.config) else None
    )
    if url is None:
        from janus.config import DEFAULT_AMQP_URL

        url = DEFAULT_AMQP_URL
    payload = json.loads(args.payload) if args.payload is not None else None
    async with await Producer.connect(url) as producer:
        await producer.submit(args.job_id, args.dependency, payload, scope=args.scope)
    print(f"submitted {args.job_id} to {args.dependency} (scope {args.scope})")
    return 0


def _ask_leader(args: argparse.Namespace, settings: Settings, path: str) -> dict[str, Any]:
    """GET a JSON answer from the leader's HTTP endpoint (only the leader knows the live state)."""
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
    except (urllib.error.URLError, OSError) as exc:
        raise JanusError(f"cannot reach Janus at {base}: {exc}") from None


def _until(reason: dict[str, Any]) -> str:
    until = reason.get("until")
    if until is None:
        return ""
    import time

    return f" (lifts in {max(0.0, until - time.time()):.1f}s)"


async def _cmd_scopes(args: argparse.Namespace, settings: Settings) -> int:
    from urllib.parse import urlencode

    query = {"top": str(args.top)} | ({"dependency": args.dependency} if args.dependency else {})
    body = _ask_leader(args, settings, f"/scopes?{urlencode(query)}")
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    for lane in body["dependencies"]:
        blocked = "; ".join(r["detail"] + _until(r) for r in lane["blocked"]) or "not blocked"
        print(
            f"{lane['dependency']}: {lane['eligible_scopes']} scopes eligible, {lane['ready']} ready, "
            f"{lane['stored']} stored, {lane['delayed']} backing off, {lane['held']} held; {blocked}"
        )
        print(f"  {'scope':<32} {'waiting':>8} {'held':>6} {'admitted':>9} {'oldest':>9}")
        for scope in lane["scopes"]:
            oldest = scope["oldest_waiting_seconds"]
            age = f"{oldest:.1f}s" if oldest is not None else "-"
            print(
                f"  {scope['scope']:<32} {scope['waiting']:>8} {scope['held']:>6} {scope['admitted']:>9} {age:>9}"
            )
    return 0


async def _cmd_why(args: argparse.Namespace, settings: Settings) -> int:
    from urllib.parse import quote

    body = _ask_leader(args, settings, f"/why/{quote(args.job_id, safe='')}")
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
        print(f"  waits for {reason['reason']}: {reason['detail']}{_until(reason)}")
    return 0


def _database_url(args: argparse.Namespace, settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return _config(args, settings).database_url


async def _cmd_jobs_retry(args: argparse.Namespace, settings: Settings) -> int:
    """Ask the leader to make dead jobs eligible again, with their attempts reset."""
    from janus.store.repository import Store

    if (args.job_id is None) == (args.dependency is None and args.scope is None):
        raise JanusError("give either JOB_ID, or --dependency and/or --scope (all their dead jobs)")
    store = await Store.connect(_database_url(args, settings), application_name="janus-cli")
    try:
        if args.job_id is not None:
            state = await store.job_state(args.job_id)
            if state is None:
                raise JanusError(f"no job {args.job_id!r}")
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
        print(f"retry request {request} recorded for {what}: {matching} dead jobs match now")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.wait
        while True:
            revived = await store.retry_request_status(request)
            if revived is not None:
                print(f"the leader made {revived} dead jobs eligible again")
                return 0
            if loop.time() >= deadline:
                print(
                    f"no leader applied it within {args.wait:g}s: the next one will (it is kept in the database)"
                )
                return 3
            await asyncio.sleep(0.2)
    finally:
        await store.close()


async def _cmd_jobs_show(args: argparse.Namespace, settings: Settings) -> int:
    """A job's state and its error history (every failed attempt)."""
    from janus.store.repository import Store

    store = await Store.connect(_database_url(args, settings), application_name="janus-cli")
    try:
        state = await store.job_state(args.job_id)
        if state is None:
            raise JanusError(f"no job {args.job_id!r}")
        history = await store.error_history(args.job_id)
    finally:
        await store.close()
    print(
        f"{args.job_id}: {state['state']}; dependency {state['dependency']}, scope {state['scope']}; "
        f"{state['attempt']} admissions, {state['failures']} failed attempts in this life"
    )
    for failure in history:
        print(f"  attempt {failure.attempt}: {failure.error}")
    return 0


async def _cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    return simulate_command.run(args)


async def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from janus.demo import run_demo

    return await run_demo(duration=args.duration, database=args.database)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="janus", description="Admission control for background jobs.")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--config", help="TOML policy file (default: $JANUS_CONFIG)")
        return sub

    with_config(commands.add_parser("run", help="lead (or stand by) and admit jobs"))
    with_config(commands.add_parser("migrate", help="apply pending database migrations"))
    with_config(commands.add_parser("check-config", help="validate a configuration file"))
    with_config(
        commands.add_parser(
            "broker-upgrade",
            help="once: replace the fanout janus.results of earlier versions (needs a user that may delete it)",
        )
    )
    submit = with_config(commands.add_parser("submit", help="publish one job by hand"))
    submit.add_argument("job_id")
    submit.add_argument("dependency")
    submit.add_argument("--scope", default="default")
    submit.add_argument("--payload", help="JSON value")
    scopes = commands.add_parser("scopes", help="per dependency, the scopes with the largest backlogs")
    scopes.add_argument("--dependency", help="only this dependency")
    scopes.add_argument("--top", type=int, default=20, help="how many scopes per dependency")
    why = commands.add_parser("why", help="why a job waits: which limit, which scopes go first")
    why.add_argument("job_id")
    for inspecting in (scopes, why):
        inspecting.add_argument("--url", help="the leader's HTTP address (default: JANUS_HTTP_HOST/PORT)")
        inspecting.add_argument("--json", action="store_true", help="print the raw JSON answer")
    jobs = commands.add_parser("jobs", help="dead jobs: show their errors, retry them")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    retry = with_config(
        jobs_commands.add_parser("retry", help="make dead jobs eligible again, their attempts reset")
    )
    retry.add_argument("job_id", nargs="?", help="one dead job")
    retry.add_argument("--dependency", help="every dead job of this dependency")
    retry.add_argument("--scope", help="every dead job of this scope")
    retry.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the leader (default 10)")
    show = with_config(jobs_commands.add_parser("show", help="a job's state and error history"))
    show.add_argument("job_id")
    demo = commands.add_parser("demo", help="Janus, producers and workers on the local services")
    demo.add_argument("--duration", type=float, default=40.0, help="seconds of traffic")
    demo.add_argument("--database", default="janus_demo", help="database to (re)create for the demo")
    conformance_cli.add_parsers(commands)
    simulate_command.add_parsers(commands)
    return parser


Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]

COMMANDS: dict[str, Command] = {
    "run": _cmd_run,
    "migrate": _cmd_migrate,
    "check-config": _cmd_check_config,
    "broker-upgrade": _cmd_broker_upgrade,
    "submit": _cmd_submit,
    "scopes": _cmd_scopes,
    "why": _cmd_why,
    "demo": _cmd_demo,
    "simulate": _cmd_simulate,
    "jobs retry": _cmd_jobs_retry,
    "jobs show": _cmd_jobs_show,
    "conformance": conformance_cli.command,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    logging.basicConfig(
        level=os.environ.get("JANUS_LOG_LEVEL", settings.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        command = f"jobs {args.jobs_command}" if args.command == "jobs" else args.command
        return _run(COMMANDS[command](args, settings))
    except JanusError as exc:
        print(f"janus: {exc}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:
        # The service's supervised tasks fail as a group; say plainly what Janus itself raised.
        ours, others = group.split(JanusError)
        if others is not None:
            raise
        assert ours is not None
        for error in _leaves(ours):
            print(f"janus: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _leaves(group: BaseExceptionGroup[JanusError]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


if __name__ == "__main__":
    sys.exit(main())
