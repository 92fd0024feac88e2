"""`janus conformance --worker-command CMD`: the command line of the conformance harness."""

from __future__ import annotations

import argparse
import json
import shlex
from typing import TYPE_CHECKING, Any

from janus.conformance.contract import DEFAULT_AMQP_URL

if TYPE_CHECKING:
    from janus.conformance.harness import Report


def add_parsers(commands: Any) -> None:
    """Register the command on the `janus` subcommand parsers."""
    sub: argparse.ArgumentParser = commands.add_parser(
        "conformance",
        help="check a worker implementation against the protocol (docs/protocol.md, Conformance)",
    )
    sub.add_argument(
        "--worker-command",
        required=True,
        help='the worker to check, split like a shell command, e.g. "node examples/node/worker.js"',
    )
    sub.add_argument(
        "--dependency", default="conformance", help="the dependency it consumes (default conformance)"
    )
    sub.add_argument(
        "--amqp-url",
        default=DEFAULT_AMQP_URL,
        help="the broker; without a vhost, a vhost of the run's own is made with rabbitmqctl and "
        "deleted after; with one, that vhost is used (nothing else may consume it)",
    )
    sub.add_argument("--timeout", type=float, default=30.0, help="seconds for each wait (default 30)")
    sub.add_argument("--json", action="store_true", help="print the report as JSON")


async def command(args: argparse.Namespace, settings: object) -> int:
    from janus.conformance.harness import Options, run_conformance  # the broker client only when it runs

    options = Options(
        worker_command=shlex.split(args.worker_command),
        dependency=args.dependency,
        amqp_url=args.amqp_url,
        timeout=args.timeout,
    )
    report = await run_conformance(options)
    print(json.dumps(as_json(report), indent=2) if args.json else render(report, args.worker_command))
    return 0 if report.ok else 1


def as_json(report: Report) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "vhost": report.vhost,
        "problems": report.problems,
        "rules": [{"rule": r.rule, "passed": r.passed, "detail": r.detail} for r in report.rules],
        "worker_output": report.worker_output[-40:],
    }


def render(report: Report, command: str) -> str:
    lines = [f"janus conformance: `{command}` on vhost {report.vhost}"]
    lines += [f"the run did not complete: {problem}" for problem in report.problems]
    lines += [f"{'PASS' if r.passed else 'FAIL'} {r.rule}: {r.detail}" for r in report.rules]
    passed = sum(r.passed for r in report.rules)
    lines.append(f"{passed} of {len(report.rules)} rules passed")
    if not report.ok and report.worker_output:
        lines.append("the worker's last output:")
        lines += [f"  {line}" for line in report.worker_output[-20:]]
    return "\n".join(lines)
