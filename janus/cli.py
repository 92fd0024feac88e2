"""The `janus` command: run, migrate, check-config, submit, demo."""

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

from janus.config import JanusConfig, Settings, load_config
from janus.errors import JanusError


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

    config = _config(args, settings)
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


async def _cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    config = _config(args, settings)
    for policy in config.policies():
        limits = ", ".join(str(limit) for limit in policy.rate_limits) or "no rate limit"
        concurrency = policy.concurrency if policy.concurrency is not None else "unlimited"
        print(
            f"{policy.name}: {limits}; concurrency {concurrency}; lease {policy.lease_timeout:g}s; "
            f"admission ttl {policy.admission_ttl:g}s; up to {policy.retry.max_attempts} attempts"
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
    submit = with_config(commands.add_parser("submit", help="publish one job by hand"))
    submit.add_argument("job_id")
    submit.add_argument("dependency")
    submit.add_argument("--scope", default="default")
    submit.add_argument("--payload", help="JSON value")
    demo = commands.add_parser("demo", help="Janus, producers and workers on the local services")
    demo.add_argument("--duration", type=float, default=40.0, help="seconds of traffic")
    demo.add_argument("--database", default="janus_demo", help="database to (re)create for the demo")
    return parser


Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]

COMMANDS: dict[str, Command] = {
    "run": _cmd_run,
    "migrate": _cmd_migrate,
    "check-config": _cmd_check_config,
    "submit": _cmd_submit,
    "demo": _cmd_demo,
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
        return _run(COMMANDS[args.command](args, settings))
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
