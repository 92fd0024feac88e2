"""The `janus` command: one module per command group, and one way to end (janus.cli.exits).

run, migrate, broker-upgrade (run.py); check-config (check.py); submit (submit.py);
scopes, why (inspect.py); status (status.py); jobs show, jobs retry (jobs.py); worker (worker.py); demo (demo.py);
apply, pause, resume, override, history (steer.py);
conformance (janus/conformance/cli.py) and simulate (janus/simulate/command.py) register
themselves from their own packages.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from janus import logs
from janus.cli import check, demo, inspect, jobs, run, status, steer, submit, worker
from janus.cli.common import Command, load_settings, run_async
from janus.cli.exits import finish
from janus.config import Settings
from janus.conformance import cli as conformance_cli
from janus.errors import ConfigError
from janus.simulate import command as simulate_command

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


async def simulate(args: argparse.Namespace, settings: Settings) -> int:
    return simulate_command.run(args)


COMMANDS: dict[str, Command] = {
    "run": run.run,
    "migrate": run.migrate,
    "check-config": check.check_config,
    "broker-upgrade": run.broker_upgrade,
    "submit": submit.submit,
    "scopes": inspect.scopes,
    "why": inspect.why,
    "status": status.status,
    "demo": demo.demo,
    "simulate": simulate,
    "jobs retry": jobs.retry,
    "jobs show": jobs.show,
    "worker": worker.worker,
    "conformance": conformance_cli.command,
    "apply": steer.apply,
    "pause": steer.pause,
    "resume": steer.resume,
    "override": steer.override,
    "history": steer.history,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="janus", description="Admission control for background jobs.")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (run, check, submit, inspect, status, jobs, worker, demo, steer):
        module.add_parsers(commands)
    conformance_cli.add_parsers(commands)
    simulate_command.add_parsers(commands)
    return parser


def _configure_logging(settings: Settings) -> None:
    level = os.environ.get("JANUS_LOG_LEVEL", settings.log_level).upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ConfigError(f"invalid environment: JANUS_LOG_LEVEL: unknown level {level!r}")
    logs.configure(level, settings.log_format)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def command() -> int:
        settings = load_settings()
        _configure_logging(settings)
        name = f"jobs {args.jobs_command}" if args.command == "jobs" else args.command
        return run_async(COMMANDS[name](args, settings))

    return finish(command)
