"""`janus demo`: Janus, producers and workers on the local services, watched live."""

from __future__ import annotations

import argparse
from typing import Any

from janus.config import Settings


def add_parsers(commands: Any) -> None:
    demo = commands.add_parser("demo", help="Janus, producers and workers on the local services")
    demo.add_argument(
        "--duration", type=float, default=40.0, help="seconds of traffic (default: %(default)s)"
    )
    demo.add_argument(
        "--database",
        default="janus_demo",
        help="database to (re)create for the demo; an existing one only if an earlier demo created it "
        "(default: %(default)s)",
    )


async def demo(args: argparse.Namespace, settings: Settings) -> int:
    from janus.demo import run_demo

    return await run_demo(duration=args.duration, database=args.database)
