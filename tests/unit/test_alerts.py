"""The alert rules that ship with Janus: valid, unit-tested by promtool, on metrics that exist,
and each explained in docs/operations.md."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.test_docs import declared_metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"


def promtool() -> str:
    """promtool (Debian's `prometheus`, installed by scripts/ensure-tools): missing fails under CI."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(
                "promtool is missing: CI=true, so this is a failure (scripts/ensure-tools installs it)"
            )
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


def alerts() -> list[dict[str, object]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass() -> None:
    done = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_unit_tested_firing() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {str(rule["alert"]) for rule in alerts()} <= fired


def test_rules_read_only_metrics_janus_serves() -> None:
    declared = set(declared_metrics())
    for rule in alerts():
        for name in re.findall(r"\bjanus_[a-z_]+", str(rule["expr"])):
            assert name in declared, f"{rule['alert']} reads {name}, which Janus does not serve"


def test_operations_says_what_each_alert_means_and_what_to_do() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    section = operations.split("## Alerts", 1)[1].split("\n## ", 1)[0]
    for rule in alerts():
        assert f"`{rule['alert']}`" in section, f"docs/operations.md#alerts does not explain {rule['alert']}"
