"""docker-compose.yml cannot run here (no Docker engine): keep it correct by reading it."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from janus.cli import build_parser
from janus.config import Settings, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_services_and_dependencies_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"rabbitmq", "postgres", "janus"} <= set(services)
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck to wait on"


def test_janus_image_builds_from_files_that_exist(compose: dict[str, Any]) -> None:
    build = compose["services"]["janus"]["build"]
    context = ROOT / build["context"]
    dockerfile = context / build["dockerfile"]
    assert dockerfile.is_file()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _ = shlex.split(line)[1:]
            for source in sources:
                assert (context / source).exists(), f"{dockerfile.name} copies missing {source}"


def test_janus_command_and_config_are_valid(compose: dict[str, Any]) -> None:
    janus = compose["services"]["janus"]
    args = build_parser().parse_args(janus["command"])
    assert args.command == "run"
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in janus["volumes"])
    config_in_container = args.config
    host_path = next(host for host, container in mounts.items() if container == config_in_container)
    load_config(ROOT / host_path, env={})  # raises ConfigError if the mounted file is invalid


def test_janus_environment_names_real_settings(compose: dict[str, Any]) -> None:
    environment = compose["services"]["janus"]["environment"]
    known = {f"JANUS_{name.upper()}" for name in Settings.model_fields}
    assert set(environment) <= known, set(environment) - known
    assert "rabbitmq:5672" in environment["JANUS_AMQP_URL"]
    assert "@postgres:5432/" in environment["JANUS_DATABASE_URL"]
    port = int(environment["JANUS_HTTP_PORT"])
    assert compose["services"]["janus"]["deploy"]["replicas"] >= 2, "a standby is the point of the lease"
    assert port > 0
