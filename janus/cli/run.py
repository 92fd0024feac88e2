"""`janus run`, `janus migrate` and `janus broker-upgrade`: the service and its set-up."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
from typing import Any

from janus.cli.common import config_of, http_token, with_config
from janus.config import Settings
from janus.errors import JanusError

log = logging.getLogger("janus.http")


def add_parsers(commands: Any) -> None:
    with_config(commands.add_parser("run", help="lead (or stand by) and admit jobs"))
    migrate = with_config(commands.add_parser("migrate", help="apply pending database migrations"))
    migrate.add_argument(
        "--create",
        action="store_true",
        help="create the database first if it does not exist (default: it must exist)",
    )
    upgrade = with_config(
        commands.add_parser(
            "broker-upgrade",
            help="once: replace the fanout janus.results of earlier versions, and redeclare queues of "
            "another type than queue_type, keeping their messages (needs a user that may delete them)",
        )
    )
    mode = upgrade.add_mutually_exclusive_group()
    mode.add_argument(
        "--scale-out",
        action="store_true",
        help="also move the intake to one queue per dependency for member mode ([scale_out]), keeping "
        "every waiting job; stop every janus run first (docs/operations.md, Scale-out)",
    )
    mode.add_argument(
        "--back",
        action="store_true",
        help="roll --scale-out back: one intake queue bound with '#' again, each dependency's intake "
        "moved into it; stop every janus run first",
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    from janus.service.app import Service, install_signal_handlers
    from janus.service.gc_pauses import tune_for_run
    from janus.service.options import ServiceOptions

    config = config_of(args, settings)
    tune_for_run()
    options = ServiceOptions.from_settings(settings)
    service = Service(config, options)
    server = None
    if options.serve_metrics:
        server = _serve(settings, service)
    install_signal_handlers(service)
    try:
        await service.run()
    finally:
        if server is not None:
            server.close()
    return 0


def _serve(settings: Settings, service: Any) -> Any:
    from janus.api.auth import TokenGuard, is_loopback
    from janus.api.http import serve
    from janus.api.status import StatusBoard

    loop = asyncio.get_running_loop()
    where = f"{settings.http_host}:{settings.http_port}"
    token = http_token(settings)
    if token is None and not is_loopback(settings.http_host):
        log.warning(
            "serving HTTP on %s without a token: whoever reaches it can read /status, /scopes and /why "
            "(set JANUS_HTTP_TOKEN_FILE)",
            where,
        )
    try:
        return serve(
            settings.http_host,
            settings.http_port,
            service.metrics.registry,
            loop,
            service.health.readiness,
            inspector=service.inspector,
            status=StatusBoard(
                service.metrics.registry,
                loop,
                service.who_leads,
                service.changes,
                owners=lambda: service.owners.status() if service.owners is not None else None,
            ),
            guard=TokenGuard(token) if token is not None else None,
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise JanusError(
                f"cannot serve /metrics on {where}: the port is in use (another janus run on this host?); "
                f"set JANUS_HTTP_PORT to a free port, or 0 to serve no HTTP"
            ) from None
        raise JanusError(
            f"cannot serve /metrics on {where}: {exc.strerror or exc} (JANUS_HTTP_HOST, JANUS_HTTP_PORT)"
        ) from None


async def migrate(args: argparse.Namespace, settings: Settings) -> int:
    from janus.store.create import create_database
    from janus.store.repository import Store

    config = config_of(args, settings)
    if args.create:
        created = await create_database(config.database_url, timeout=settings.db_timeout)
        if created is not None:
            print(f"created database {created}")
    store = await Store.connect(config.database_url, timeout=settings.db_timeout)
    try:
        applied = await store.migrate()
    finally:
        await store.close()
    print(f"applied migrations: {applied}" if applied else "schema is up to date")
    return 0


async def broker_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    """Once, when upgrading from a Janus whose janus.results was a fanout (docs/protocol.md), or
    whose queues are of another type than the policy's queue_type (docs/operations.md)."""
    from janus.broker import connection as broker
    from janus.broker import intake_upgrade, queue_types, topology

    config = config_of(args, settings)
    connection = await broker.connect(
        config.amqp_url, name="janus-broker-upgrade", timeout=settings.db_timeout
    )
    intake = intake_upgrade.Moved()
    try:
        deleted = await topology.upgrade_results_exchange(connection)
        names = [p.name for p in config.policies()]
        if args.back:
            intake = await intake_upgrade.to_single(connection, names, config.queue_type)
        converted = await queue_types.convert_queues(connection, names, config.queue_type)
        # Without a flag, a broker already upgraded stays in member mode.
        partitioned = args.scale_out or (not args.back and await intake_upgrade.is_partitioned(connection))
        declared = await topology.declare_topology(
            connection, names, queue_type=config.queue_type, partitioned=partitioned
        )
        if partitioned:
            intake = await intake_upgrade.to_partitioned(connection, names, config.queue_type)
    finally:
        await broker.close(connection)
    deleted += intake.deleted
    print(f"deleted: {', '.join(deleted) or 'nothing'}; declared: {', '.join(declared) or 'nothing'}")
    for name, moved in converted.items():
        print(f"redeclared {name} as {config.queue_type} ({moved} messages moved)")
    for name, moved in intake.moved.items():
        print(
            f"moved {moved} messages of {name} to {topology.INTAKE_EXCHANGE} again, each with its routing key"
        )
    if partitioned:
        print("intake: one queue per dependency (member mode); roll back with --back")
    elif args.back:
        print(f"intake: one queue, {topology.INTAKE_QUEUE} (one leader for every dependency)")
    return 0
