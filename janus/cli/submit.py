"""`janus submit`: publish one job by hand, refused here if Janus would set it aside."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pydantic import JsonValue

from janus.cli.common import amqp_url_of, config_of, has_config, with_config
from janus.config import Settings
from janus.errors import JanusError, ProtocolError

# Seconds to reach RabbitMQ and find janus.intake: a hand-typed command must not hang.
SUBMIT_TIMEOUT = 5.0


def add_parsers(commands: Any) -> None:
    submit = with_config(commands.add_parser("submit", help="publish one job by hand"))
    submit.add_argument("job_id")
    submit.add_argument("dependency", help="with --config, one the file configures")
    submit.add_argument(
        "--scope", default="default", help="the job's scope, e.g. a tenant (default: %(default)s)"
    )
    submit.add_argument("--payload", help="a JSON value (default: none)")
    submit.add_argument(
        "--amqp-url",
        help="RabbitMQ; a cluster's nodes separated by commas (default: $JANUS_AMQP_URL, else the "
        "--config file's, else the local one)",
    )


def parse_payload(text: str | None) -> JsonValue:
    if text is None:
        return None

    def not_json(constant: str) -> None:
        raise JanusError(f"--payload: {constant} is not a JSON number")

    try:
        value: JsonValue = json.loads(text, parse_constant=not_json)
    except json.JSONDecodeError as exc:
        raise JanusError(f"--payload is not JSON: {exc.msg} at character {exc.pos + 1}") from None
    return value


async def submit(args: argparse.Namespace, settings: Settings) -> int:
    from janus.client.producer import Producer
    from janus.protocol import encode_checked_intake

    payload = parse_payload(args.payload)
    max_payload_bytes = None
    if has_config(args, settings):
        config = config_of(args, settings)
        if args.dependency not in config.dependencies:
            raise JanusError(
                f"unknown dependency {args.dependency!r}: the configuration has "
                f"{', '.join(sorted(config.dependencies))}"
            )
        max_payload_bytes = config.max_payload_bytes
    try:
        encode_checked_intake(
            job_id=args.job_id,
            dependency=args.dependency,
            scope=args.scope,
            payload=payload,
            max_payload_bytes=max_payload_bytes,
        )
    except ProtocolError as exc:
        raise JanusError(f"not submitted: Janus would set it aside ({exc.reason}): {exc.detail}") from None
    url = amqp_url_of(args, settings)
    async with await Producer.connect(url, name="janus-submit", timeout=SUBMIT_TIMEOUT) as producer:
        await producer.submit(args.job_id, args.dependency, payload, scope=args.scope)
    print(f"submitted {args.job_id} to {args.dependency} (scope {args.scope})")
    return 0
