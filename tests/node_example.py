"""The Node.js example (examples/node) for the tests: node and npm found, its packages installed.

Without node or npm the tests that need them skip on a laptop but fail under CI=true
(`.ci/run` installs them: scripts/ensure-node). The packages come from the lock file
(`npm ci`), only when the installed amqplib is not the locked one, so that a machine
that has them needs no network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "node"
WORKER = EXAMPLE / "worker.js"
PRODUCER = EXAMPLE / "producer.js"


def node_example() -> Path:
    """examples/node, ready to run; the test skips (or fails under CI) without node and npm."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "node and npm are needed for examples/node (scripts/ensure-node installs them)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + ": CI=true, so this is a failure, not a skip")
        pytest.skip(message)
    if not _installed():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=EXAMPLE, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"npm ci in {EXAMPLE} failed:\n{done.stdout}\n{done.stderr}"
    return EXAMPLE


def _installed() -> bool:
    lock = json.loads((EXAMPLE / "package-lock.json").read_text())
    wanted = lock["packages"]["node_modules/amqplib"]["version"]
    installed = EXAMPLE / "node_modules" / "amqplib" / "package.json"
    return installed.exists() and json.loads(installed.read_text())["version"] == wanted
