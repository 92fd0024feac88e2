"""docker-compose.yml's `cluster` profile, checked by reading it (no Docker engine here): three
RabbitMQ nodes that form one cluster, quorum queues, and a Janus given every node's URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from janus.broker import definitions, topology
from janus.cli import build_parser
from janus.config import Settings, load_config
from janus.urls import split_urls

ROOT = Path(__file__).resolve().parents[2]
NODES = ("rabbit-1", "rabbit-2", "rabbit-3")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services: dict[str, Any] = loaded["services"]
    return services


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path or named volume."""
    return {container: source for source, container, *_ in (v.split(":") for v in service.get("volumes", []))}


def conf(path: str) -> dict[str, str]:
    settings = {}
    for line in (ROOT / path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def test_only_the_cluster_profile_starts_the_cluster(services: dict[str, Any]) -> None:
    in_profile = {name for name, service in services.items() if "cluster" in service.get("profiles", [])}
    assert in_profile == {*NODES, "broker-definitions-cluster", "janus-cluster", "janus-cluster-database"}
    for name in ("rabbitmq", "janus", "postgres"):
        assert "profiles" not in services[name], f"{name} runs without a profile, as before"


def test_three_nodes_that_join_one_cluster(services: dict[str, Any]) -> None:
    nodes = [services[name] for name in NODES]
    assert [node["hostname"] for node in nodes] == list(NODES)
    host_ports = [node["ports"][0].split(":")[0] for node in nodes]
    assert len(set(host_ports)) == 3, "a host port each"
    assert "5672" not in host_ports, "the single broker keeps 5672"
    for node in nodes:
        where = mounts(node)
        discovery = conf(where["/etc/rabbitmq/conf.d/40-cluster.conf"])
        assert discovery["cluster_formation.peer_discovery_backend"] == "classic_config"
        listed = {v for k, v in discovery.items() if k.startswith("cluster_formation.classic_config.nodes.")}
        assert listed == {f"rabbit@{name}" for name in NODES}  # the image names a node rabbit@HOSTNAME
        # the same cookie for the three: the file make compose-secrets writes
        assert (
            where["/run/janus-secrets/erlang-cookie"] == f"./deploy/secrets/{definitions.ERLANG_COOKIE_FILE}"
        )
        assert "/run/janus-secrets/erlang-cookie /var/lib/rabbitmq/.erlang.cookie" in node["entrypoint"][-1]
        # Janus's settings (max_message_size) and the cluster's definitions, rendered for quorum queues
        loaded = conf(where["/etc/rabbitmq/conf.d/30-janus.conf"])["load_definitions"]
        assert where[str(Path(loaded).parent)] == "rabbitmq-cluster-definitions"


def test_the_cluster_definitions_declare_quorum_queues(services: dict[str, Any], tmp_path: Path) -> None:
    renderer = services["broker-definitions-cluster"]
    args = definitions.build_parser().parse_args(renderer["command"])
    where = mounts(renderer)
    assert where[str(args.output.parent)] == "rabbitmq-cluster-definitions"
    config_file = where[str(args.config)]
    assert load_config(ROOT / config_file, env={}).queue_type == "quorum"
    output = tmp_path / "definitions.json"
    command = [*renderer["command"], "--output", str(output)]
    command[command.index("--config") + 1] = str(ROOT / config_file)
    command[command.index("--password-dir") + 1] = str(tmp_path / "secrets")
    assert definitions.main(command) == 0
    rendered = yaml.safe_load(output.read_text())
    assert {queue["name"] for queue in rendered["queues"]} == {spec.name for spec in topology.SHARED_QUEUES}
    assert {queue["arguments"].get("x-queue-type") for queue in rendered["queues"]} == {"quorum"}


def test_janus_cluster_is_given_every_node(services: dict[str, Any], tmp_path: Path) -> None:
    janus = services["janus-cluster"]
    args = build_parser().parse_args(janus["command"])
    where = mounts(janus)
    config = load_config(ROOT / where[args.config], env={})
    assert config.queue_type == "quorum"
    assert set(janus["environment"]) <= {f"JANUS_{name.upper()}" for name in Settings.model_fields}
    url_file = janus["environment"]["JANUS_AMQP_URL_FILE"]
    assert where[url_file] == f"./deploy/secrets/{definitions.JANUS_CLUSTER_URL_FILE}"
    assert {f"rabbit-{i}" for i in (1, 2, 3)} <= set(janus["depends_on"])
    # What make compose-secrets writes there: one URL per node, Janus's user and password.
    secrets_dir = tmp_path / "secrets"
    definitions.main(
        [
            "--config",
            str(ROOT / "config" / "janus.toml"),
            "--password-dir",
            str(secrets_dir),
            "--create-passwords",
            "--rabbitmq-version",
            "3.10",
            "--allow-unchecked-cc",
        ]
    )
    urls = split_urls((secrets_dir / definitions.JANUS_CLUSTER_URL_FILE).read_text())
    password = (secrets_dir / "janus").read_text().strip()
    parts = [urlsplit(url) for url in urls]
    assert [(p.hostname, p.port) for p in parts] == [(name, 5672) for name in NODES]
    assert {(p.username, p.password, p.path) for p in parts} == {("janus", password, "/janus")}
    assert (secrets_dir / definitions.ERLANG_COOKIE_FILE).read_text().strip()
    # Its own database, created by the one-shot migrate --create before it starts.
    database = services["janus-cluster-database"]
    assert database["environment"]["JANUS_DATABASE_URL"] == janus["environment"]["JANUS_DATABASE_URL"]
    assert build_parser().parse_args(database["command"]).create
    assert janus["depends_on"]["janus-cluster-database"] == {"condition": "service_completed_successfully"}
