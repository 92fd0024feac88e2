"""Process settings from JANUS_* variables, and the secrets they may name in files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from janus.errors import ConfigError


def read_secret_file(path: str | os.PathLike[str], variable: str) -> str:
    """A secret from a file (Docker/Kubernetes secrets): its text, without the trailing newline."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise ConfigError(f"{variable}: {path} is empty")
    return secret


def secret_from_env(env: Mapping[str, str], name: str) -> str | None:
    """JANUS_<NAME>, or the contents of the file JANUS_<NAME>_FILE names; never both."""
    variable = f"JANUS_{name.upper()}"
    direct, file = env.get(variable) or None, env.get(f"{variable}_FILE") or None
    if direct is not None and file is not None:
        raise ConfigError(f"set {variable} or {variable}_FILE, not both")
    if file is not None:
        return read_secret_file(file, f"{variable}_FILE")
    return direct


class Settings(BaseSettings):
    """Process settings: where things are and how the process behaves, from JANUS_* variables."""

    model_config = SettingsConfigDict(env_prefix="JANUS_", extra="ignore")

    config: Path | None = None
    amqp_url: str | None = None
    database_url: str | None = None
    # Keep credentials out of the environment: the URL is read from this file instead.
    amqp_url_file: Path | None = None
    database_url_file: Path | None = None
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=9464, ge=0, le=65535)  # 0 disables the metrics endpoint
    # A bearer token, read from this file, guards the HTTP API but /healthz and /readyz (janus/api/auth.py).
    http_token_file: Path | None = None
    # Seconds. Bounded so that a typo (1e-9, 1e300) is refused here, not met as a traceback later.
    leader_lease: float = Field(default=3.0, ge=0.1, le=3600)  # a leader's lease lasts this unrenewed
    leader_renew_every: float = Field(default=0.75, ge=0.01, le=3600)
    standby_poll_every: float = Field(default=0.5, ge=0.01, le=3600)
    # Seconds; Janus (and RabbitMQ) declare the connection dead after about 3 missed beats.
    amqp_heartbeat: int = Field(default=2, ge=0, le=600)  # 0 lets the broker decide (RabbitMQ: 60)
    db_timeout: float = Field(default=5.0, ge=0.01, le=3600)  # connect and short statements (lease, tick)
    reconnect_max_delay: float = Field(default=5.0, ge=0.01, le=3600)  # backoff cap after losing broker or DB
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object per line (janus/logs.py)

    @model_validator(mode="after")
    def _renewals_fit_the_lease(self) -> Settings:
        # As janus.service.leadership.LeaseTimings requires: one slow renewal must not lose it.
        margin = max(self.leader_lease * 0.2, 0.05)
        if self.leader_renew_every * 2 > self.leader_lease - margin:
            raise ValueError(
                f"JANUS_LEADER_RENEW_EVERY ({self.leader_renew_every:g}) must be under half of "
                f"JANUS_LEADER_LEASE ({self.leader_lease:g}) minus its safety margin ({margin:g})"
            )
        return self

    @model_validator(mode="after")
    def _urls_from_files(self) -> Settings:
        for name in ("amqp_url", "database_url"):
            file: Path | None = getattr(self, f"{name}_file")
            if file is None:
                continue
            variable = f"JANUS_{name.upper()}_FILE"
            if getattr(self, name):
                raise ConfigError(f"set JANUS_{name.upper()} or {variable}, not both")
            setattr(self, name, read_secret_file(file, variable))
        return self
