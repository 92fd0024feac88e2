"""deploy/kubernetes/ cannot be applied here (no cluster): keep it correct by validating every
manifest against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: an unknown or
misplaced field fails) and by checking that its pieces fit together and fit Janus."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from janus.cli import build_parser
from janus.config import Settings, parse_config

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
# The newest version whose strict schemas kubernetes-validate bundles.
KUBERNETES = "1.29.0"


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


def resources() -> dict[str, dict[str, Any]]:
    """Every object kustomization.yaml applies, by kind."""
    kustomization = documents("kustomization.yaml")[0]
    found: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for document in documents(name):
            assert document["kind"] not in found, f"two {document['kind']}s"
            found[document["kind"]] = document
    return found


def container() -> dict[str, Any]:
    containers = resources()["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    janus: dict[str, Any] = containers[0]
    return janus


@pytest.mark.parametrize(
    "name", sorted(p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
)
def test_each_manifest_is_valid_against_the_kubernetes_schemas(name: str) -> None:
    for document in documents(name):
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_validator_refuses_a_misplaced_field() -> None:
    """The check above can fail: a probe put at the pod's level is not a Deployment."""
    deployment = resources()["Deployment"]
    broken = {
        **deployment,
        "spec": {**deployment["spec"], "livenessProbe": {"httpGet": {"path": "/healthz"}}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_the_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    listed = set(documents("kustomization.yaml")[0]["resources"])
    on_disk = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == on_disk


def test_n_replicas_and_a_budget_that_keeps_all_but_one() -> None:
    found = resources()
    labels = found["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert found["Deployment"]["spec"]["replicas"] >= 2, (
        "a standby (or a share of the dependencies) to take over"
    )
    for kind in ("PodDisruptionBudget", "Deployment"):
        selector = found[kind]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), f"the {kind}'s selector misses the pods"
    assert found["Service"]["spec"]["selector"].items() <= labels.items()
    assert found["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_probes_ask_healthz_and_readyz_on_the_port_janus_serves() -> None:
    janus = container()
    env = {e["name"]: e["value"] for e in janus["env"]}
    port = next(p for p in janus["ports"] if p["name"] == "http")
    assert port["containerPort"] == int(env["JANUS_HTTP_PORT"])
    assert env["JANUS_HTTP_HOST"] == "0.0.0.0", "probes come from outside the pod"
    assert janus["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert janus["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_secrets_are_mounted_as_files_that_janus_reads() -> None:
    found = resources()
    janus = container()
    env = {e["name"]: e for e in janus["env"]}
    assert all("valueFrom" not in e for e in env.values()), "no secret in the environment"
    settings = set(Settings.model_fields)
    for name in env:
        assert name.startswith("JANUS_")
        assert name.removeprefix("JANUS_").lower() in settings, f"{name} is not a Janus setting"
    volumes = {v["name"]: v for v in found["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in janus["volumeMounts"]}
    secret_dir = next(path for path, volume in mounts.items() if "secret" in volumes[volume])
    files = {item["path"] for item in volumes[mounts[secret_dir]]["secret"]["items"]}
    for variable in ("JANUS_AMQP_URL_FILE", "JANUS_DATABASE_URL_FILE"):
        path = Path(env[variable]["value"])
        assert str(path.parent) == secret_dir
        assert path.name in files
    example = documents("secret.example.yaml")[0]
    assert example["metadata"]["name"] == volumes[mounts[secret_dir]]["secret"]["secretName"]
    assert set(example["stringData"]) == files


def test_the_policy_mounted_is_a_valid_janus_policy_for_the_command_run() -> None:
    found = resources()
    janus = container()
    args = build_parser().parse_args(janus["args"])
    assert args.command == "run"
    volumes = {v["name"]: v for v in found["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in janus["volumeMounts"]}
    config = Path(args.config)
    configmap = volumes[mounts[str(config.parent)]]["configMap"]["name"]
    assert configmap == found["ConfigMap"]["metadata"]["name"]
    policy = tomllib.loads(found["ConfigMap"]["data"][config.name])
    urls = {"JANUS_AMQP_URL": "amqp://u:p@rabbitmq:5672/", "JANUS_DATABASE_URL": "postgresql://u@pg/janus"}
    parsed = parse_config(policy, source=str(config), env=urls)
    assert parsed.dependencies
    assert parsed.scale_out.enabled, "the replicas share the dependencies (member mode)"


def test_resources_are_requested_and_cpu_is_not_throttled() -> None:
    resources_ = container()["resources"]
    assert {"cpu", "memory"} <= set(resources_["requests"])
    assert "memory" in resources_["limits"]
    assert "cpu" not in resources_["limits"], "a throttled leader misses its renewals"
