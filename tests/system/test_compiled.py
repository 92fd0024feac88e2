"""The compiled build (`make compiled`: scripts/compile_core.py, mypyc over the core and the
simulation engine) decides exactly as the Python one: built in a copy of the tree, it passes the
recorded core traces, and `janus simulate` prints the same report and writes the same timeline
for every example workload."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ["tenants.toml", "trace.toml", "outage.toml"]


def _run(args: list[str], tree: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        args, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _copy(tree: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.so")
    for part in ("janus", "tests", "examples"):
        shutil.copytree(ROOT / part, tree / part, ignore=ignore)
    (tree / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "compile_core.py", tree / "scripts")
    shutil.copy(ROOT / "pyproject.toml", tree)


def _simulate(tree: Path, workload: str, out: Path) -> str:
    examples = tree / "examples" / "simulate"
    timeline = out / f"{workload}.csv"
    done = _run(
        [
            sys.executable,
            "-m",
            "janus.cli",
            "simulate",
            "--config",
            str(examples / "policy.toml"),
            "--workload",
            str(examples / workload),
            "--seed",
            "7",
            "--timeline",
            str(timeline),
        ],
        tree,
    )
    assert done.returncode == 0, done.stderr
    # All but the lines that say how long it took and where the timeline went.
    report = [
        line for line in done.stdout.splitlines() if "wall time" not in line and "timeline:" not in line
    ]
    assert len(report) > 10, done.stdout
    return "\n".join(report) + timeline.read_text(encoding="utf-8")


def test_the_compiled_build_decides_exactly_as_the_python_one(tmp_path: Path) -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: `make compiled` cannot build here")
    plain, compiled = tmp_path / "plain", tmp_path / "compiled"
    _copy(plain)
    _copy(compiled)
    built = _run([sys.executable, "scripts/compile_core.py"], compiled, timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    where = _run([sys.executable, "-c", "import janus.core.scheduler as s; print(s.__file__)"], compiled)
    assert where.stdout.strip().endswith(".so"), where.stdout + where.stderr  # the compiled one ran
    traces = _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_core_trace.py"],
        compiled,
    )
    assert traces.returncode == 0, traces.stdout[-3000:]
    for workload in WORKLOADS:
        (tmp_path / "out-plain").mkdir(exist_ok=True)
        (tmp_path / "out-compiled").mkdir(exist_ok=True)
        assert _simulate(compiled, workload, tmp_path / "out-compiled") == _simulate(
            plain, workload, tmp_path / "out-plain"
        ), workload
