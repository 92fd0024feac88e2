"""docker-compose.yml cannot run here (no Docker engine): keep it correct by reading it."""

from __future__ import annotations

import base64
import hashlib
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from janus.broker import definitions
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
    assert "@postgres:5432/" in environment["JANUS_DATABASE_URL"]
    port = int(environment["JANUS_HTTP_PORT"])
    assert compose["services"]["janus"]["deploy"]["replicas"] >= 2, "a standby is the point of the lease"
    assert port > 0


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (relative to the project) or named volume."""
    return {container: source for source, container, *_ in (v.split(":") for v in service.get("volumes", []))}


def test_no_guest_anywhere(compose: dict[str, Any]) -> None:
    """RabbitMQ loads the least-privilege definitions at boot (no guest is created then), and
    nothing logs in as guest."""
    for name, service in compose["services"].items():
        for key, value in service.get("environment", {}).items():
            assert "guest" not in str(value), f"{name}: {key} uses guest"
            assert not key.startswith("RABBITMQ_DEFAULT_"), f"{name}: {key} creates a default user"


def test_rabbitmq_loads_the_definitions_the_definitions_service_writes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    rabbitmq, renderer = services["rabbitmq"], services["broker-definitions"]
    assert rabbitmq["depends_on"]["broker-definitions"] == {"condition": "service_completed_successfully"}
    rabbit_mounts = mounts(rabbitmq)
    conf = next(
        source for container, source in rabbit_mounts.items() if container.startswith("/etc/rabbitmq/conf.d/")
    )
    settings = {}
    for line in (ROOT / conf).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    loaded = Path(settings["load_definitions"])
    # The broker refuses what Janus would: its memory is bounded by prefetch x this size.
    janus_config = load_config(ROOT / "config" / "janus.toml", env={})
    assert int(settings["max_message_size"]) == janus_config.max_message_size
    # The file RabbitMQ loads is in a named volume the renderer writes its --output into.
    rabbit_volume, rabbit_dir = next(
        (s, Path(c)) for c, s in rabbit_mounts.items() if loaded.is_relative_to(c)
    )
    assert rabbit_volume in compose["volumes"], "a named volume, shared by the two services"
    args = definitions.build_parser().parse_args(renderer["command"])
    assert renderer["entrypoint"] == ["python", "-m", "janus.broker.definitions"]
    renderer_mounts = mounts(renderer)
    renderer_dir = next(Path(c) for c, s in renderer_mounts.items() if s == rabbit_volume)
    assert args.output.relative_to(renderer_dir) == loaded.relative_to(rabbit_dir)
    # ...rendered from the project's config and from deploy/secrets/.
    assert renderer_mounts[str(args.config)] == "./config/janus.toml"
    assert renderer_mounts[str(args.password_dir)] == "./deploy/secrets"
    # ...for the broker it runs: worker users on one that does not check CC/BCC only if asked.
    image_version = rabbitmq["image"].split(":")[1].split("-")[0]
    assert args.rabbitmq_version == image_version
    assert args.allow_unchecked_cc == (definitions.unchecked_cc_risk(image_version) is not None)
    # The Janus image makes the volume's mount point writable by its unprivileged user.
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert f"chown janus {renderer_dir}" in dockerfile


def test_compose_secrets_give_every_user_a_password_and_janus_its_url(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """What `make compose-secrets` and the broker-definitions service do, run here: every user
    of the definitions can log in with the password in its file, and Janus's URL is its own."""
    secrets_dir, output = tmp_path / "secrets", tmp_path / "definitions.json"
    config = ROOT / "config" / "janus.toml"
    base = ["--config", str(config), "--password-dir", str(secrets_dir)]
    base += ["--rabbitmq-version", "3.10", "--allow-unchecked-cc"]  # as the Makefile and compose say
    assert definitions.main([*base, "--create-passwords"]) == 0
    first = {path.name: path.read_text() for path in secrets_dir.iterdir()}
    assert definitions.main([*base, "--create-passwords", "--output", str(output)]) == 0
    assert {path.name: path.read_text() for path in secrets_dir.iterdir()} == first, "kept, not remade"

    rendered = yaml.safe_load(output.read_text())  # JSON is YAML
    users = {user["name"]: user for user in rendered["users"]}
    expected = definitions.roles(list(load_config(config, env={}).dependencies))
    assert sorted(users) == sorted(expected)
    assert "guest" not in users
    for name, user in users.items():
        digest = base64.b64decode(user["password_hash"])
        salt, password = digest[:4], first[name].strip()
        assert digest[4:] == hashlib.sha256(salt + password.encode()).digest(), f"{name} cannot log in"
    assert len(set(first[name] for name in users)) == len(users), "a password of its own each"

    janus = compose["services"]["janus"]
    url_file = janus["environment"]["JANUS_AMQP_URL_FILE"]
    assert mounts(janus)[url_file] == f"./deploy/secrets/{definitions.JANUS_URL_FILE}"
    url = urlsplit(first[definitions.JANUS_URL_FILE].strip())
    assert (url.username, url.password) == ("janus", first["janus"].strip())
    assert (url.hostname, url.port, url.path) == ("rabbitmq", 5672, "/" + rendered["vhosts"][0]["name"])
    assert "rabbitmq" in janus["depends_on"]


def test_deploy_secrets_are_never_committed() -> None:
    ignore = (ROOT / "deploy" / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignore
    assert "!.gitignore" in ignore
