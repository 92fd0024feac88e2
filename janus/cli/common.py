"""What several commands share: the event loop, the settings, the policy file, wording."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from janus.config import DEFAULT_AMQP_URL, JanusConfig, Settings, load_config
from janus.errors import ConfigError, JanusError

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def run_async(coroutine: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # uvloop is optional: plain asyncio works, slower
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def load_settings() -> Settings:
    """The JANUS_* environment, or a ConfigError naming each bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            (f"JANUS_{'_'.join(str(part) for part in item['loc']).upper()}: " if item["loc"] else "")
            + item["msg"].removeprefix("Value error, ")
            for item in exc.errors()
        )
        raise ConfigError(f"invalid environment: {problems}") from None


def port(text: str) -> int:
    """An argparse type: a TCP port, 0..65535 (bind() would raise OverflowError beyond)."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {number}")
    return number


def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sub.add_argument("--config", help="TOML policy file (default: $JANUS_CONFIG)")
    return sub


def config_of(args: argparse.Namespace, settings: Settings) -> JanusConfig:
    path = getattr(args, "config", None) or settings.config
    if path is None:
        raise JanusError("no configuration: pass --config PATH or set JANUS_CONFIG")
    return load_config(Path(path))


def has_config(args: argparse.Namespace, settings: Settings) -> bool:
    return bool(getattr(args, "config", None) or settings.config)


def amqp_url_of(args: argparse.Namespace, settings: Settings) -> str:
    """--amqp-url, else JANUS_AMQP_URL(_FILE), else the policy file's, else the local default."""
    given: str | None = getattr(args, "amqp_url", None)
    if given:
        return given
    if settings.amqp_url:
        return settings.amqp_url
    if has_config(args, settings):
        return config_of(args, settings).amqp_url
    return DEFAULT_AMQP_URL


def database_url_of(args: argparse.Namespace, settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return config_of(args, settings).database_url


def plural(count: int, noun: str, many: str | None = None) -> str:
    """ "1 dead job", "3 dead jobs"."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def lifts_in(until: float | None, now: float | None = None) -> str:
    """ " (lifts in 4.2 s)" for a time on the leader's clock, or "" when only an event lifts it."""
    if until is None:
        return ""
    left = max(0.0, until - (time.time() if now is None else now))
    return f" (lifts in {left:.1f} s)"
