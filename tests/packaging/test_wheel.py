"""The built wheel is a working Janus: installed into a fresh virtual environment, away from this
checkout, `janus check-config` reads the demo's packaged policy and `janus demo` starts.

Builds the wheel as `pip` does for a user (an isolated build), installs it with its
dependencies from the package index, and runs the installed `janus`. About a minute. A
machine that cannot reach the index skips it, except in CI.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import janus

pytestmark = pytest.mark.packaging

ROOT = Path(janus.__file__).resolve().parent.parent
NETWORK_ERRORS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ProxyError",
)
# Files `janus run`, `janus migrate` and `janus demo` read at run time, besides the modules.
DATA_FILES = (
    "janus/demo/policy.toml",
    "janus/store/sql/queries.sql",
    "janus/store/migrations/0001_initial.sql",
    "janus/api/static/index.html",
    "janus/api/static/app.js",
    "janus/api/static/style.css",
)


def _run(command: list[str], cwd: Path, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    # Nothing of this checkout or its environment may leak in: no PYTHONPATH, no JANUS_* settings.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("JANUS_")}
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _pip(arguments: list[str], python: Path, cwd: Path) -> None:
    done = _run([str(python), "-m", "pip", "--disable-pip-version-check", *arguments], cwd)
    if done.returncode != 0:
        output = done.stdout + done.stderr
        offline = any(error in output for error in NETWORK_ERRORS)
        if offline and os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
            pytest.skip(f"the package index is not reachable: {output.strip().splitlines()[-1]}")
        pytest.fail(f"pip {' '.join(arguments)} failed:\n{output}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the fresh environment's bin directory, a directory outside this checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy: building in place would leave build/ in the checkout
    shutil.copytree(ROOT / "janus", source / "janus", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    _pip(["wheel", "--no-deps", "--wheel-dir", str(tmp / "dist"), str(source)], Path(sys.executable), tmp)
    (wheel,) = (tmp / "dist").glob("janus_admission-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert set(DATA_FILES) <= names, f"missing from the wheel: {sorted(set(DATA_FILES) - names)}"
    venv.create(tmp / "env", with_pip=True)
    python = tmp / "env" / "bin" / "python"
    _pip(["install", "--prefer-binary", str(wheel)], python, tmp)
    return tmp / "env" / "bin", tmp


def test_janus_runs_from_the_wheel_not_from_this_checkout(installed: tuple[Path, Path]) -> None:
    bin_dir, cwd = installed
    done = _run([str(bin_dir / "python"), "-c", "import janus; print(janus.__file__)"], cwd)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(bin_dir.parent), done.stdout


def test_check_config_reads_the_packaged_demo_policy(installed: tuple[Path, Path]) -> None:
    bin_dir, cwd = installed
    where = "from janus.demo import DEMO_POLICY; print(DEMO_POLICY)"
    located = _run([str(bin_dir / "python"), "-c", where], cwd)
    assert located.returncode == 0, located.stderr
    policy = Path(located.stdout.strip())
    assert policy.is_relative_to(bin_dir.parent)
    done = _run([str(bin_dir / "janus"), "check-config", "--config", str(policy)], cwd)
    assert done.returncode == 0, done.stderr
    for dependency in ("payments-api", "email", "geocoder"):
        assert f"{dependency}: " in done.stdout, done.stdout


def test_demo_starts_from_the_wheel(installed: tuple[Path, Path]) -> None:
    bin_dir, cwd = installed
    done = _run([str(bin_dir / "janus"), "demo", "--help"], cwd)
    assert done.returncode == 0, done.stderr
    assert "--duration" in done.stdout


def test_the_policy_in_config_is_the_packaged_one() -> None:
    # config/demo.toml is where a reader of the repository looks; it must not drift from the package.
    assert filecmp.cmp(ROOT / "config" / "demo.toml", ROOT / "janus" / "demo" / "policy.toml", shallow=False)
