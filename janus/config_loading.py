"""Reading the policy file: TOML, the environment's URL overrides, errors that name the key."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from janus.config_policy import JanusConfig
from janus.config_settings import secret_from_env
from janus.errors import ConfigError

# "dependencies.api.retention: ..." from a check of the whole file: the key the problem is at.
_PLACED = re.compile(r"^([a-z_]+(?:\.[A-Za-z0-9_.\-]+)*): (.*)$", re.S)


def problem(item: ErrorDetails) -> tuple[str, str]:
    """One of pydantic's errors as a user reads it: the key's path, and what is wrong there."""
    location = ".".join(str(part) for part in item["loc"]) or "(top level)"
    message = item["msg"].removeprefix("Value error, ")
    if item["type"] == "extra_forbidden":
        message = "unknown key"
    elif item["type"] == "missing":
        message = "required key is missing"
    return location, message


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location, message = problem(item)
        placed = _PLACED.match(message)
        if not item["loc"] and placed:  # a check across tables names the key it is about
            location, message = placed.groups()
        lines.append(f"  {location}: {message}")
    return "\n".join(lines)


def parse_config(
    data: dict[str, Any], source: str = "<config>", env: dict[str, str] | None = None
) -> JanusConfig:
    """Validate a decoded config; JANUS_AMQP_URL / JANUS_DATABASE_URL (or the files that
    JANUS_AMQP_URL_FILE / JANUS_DATABASE_URL_FILE name) override the file."""
    env = dict(os.environ) if env is None else env
    merged = dict(data)
    for key in ("amqp_url", "database_url"):
        override = secret_from_env(env, key)
        if override:
            merged[key] = override
    try:
        return JanusConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration in {source}:\n{_format_errors(exc)}") from None


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> JanusConfig:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {file}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"invalid TOML in {file}: not UTF-8 (byte {exc.start + 1})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {file}: {exc}") from None
    except RecursionError:
        # tomllib parses nested arrays and tables recursively: no policy nests this deep.
        raise ConfigError(f"invalid TOML in {file}: nested too deeply") from None
    return parse_config(data, str(file), env)
