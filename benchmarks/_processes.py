"""The child processes of the end-to-end benchmarks, and the CPU they and the services spend.

Split out of benchmarks/throughput.py, which re-exports these names for the other benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import psutil  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
PHASE_TIMEOUT = 240.0
STDOUT_LINE_LIMIT = 64 * 1024 * 1024  # a worker's report carries every latency on one line


class BenchmarkError(Exception):
    pass


# -- processes -------------------------------------------------------------------


class Child:
    """A child process: stdout read line by line, stderr kept in a file for post-mortems."""

    started: ClassVar[set[Child]] = set()  # every child of this run, so none outlives a failure

    def __init__(self, name: str, process: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.name = name
        self.process = process
        self.stderr_path = stderr_path
        self.ps = psutil.Process(process.pid)
        Child.started.add(self)

    @classmethod
    async def start(
        cls,
        name: str,
        args: Sequence[str],
        workdir: Path,
        env: dict[str, str] | None = None,
        tree: Path = ROOT,
    ) -> Child:
        """`tree`: the source tree whose modules `-m` runs (another checkout: a baseline)."""
        stderr_path = workdir / f"{name}.stderr"
        with stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                cwd=tree,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                limit=STDOUT_LINE_LIMIT,
            )
        return cls(name, process, stderr_path)

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _failed(self, what: str) -> BenchmarkError:
        return BenchmarkError(f"{self.name}: {what}\n--- stderr of {self.name} ---\n{self.stderr_tail()}")

    async def line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        try:
            raw = await asyncio.wait_for(self.process.stdout.readline(), timeout=timeout)
        except TimeoutError:
            raise self._failed(f"no output within {timeout:g}s") from None
        if not raw:
            await self.process.wait()
            raise self._failed(f"exited ({self.process.returncode}) without the expected output")
        return raw.decode().strip()

    async def expect(self, text: str, timeout: float = 60.0) -> None:
        line = await self.line(timeout)
        if line != text:
            raise self._failed(f"expected {text!r}, got {line!r}")

    async def report(self, timeout: float = PHASE_TIMEOUT) -> dict[str, Any]:
        line = await self.line(timeout)
        try:
            report: dict[str, Any] = json.loads(line)
        except ValueError:
            raise self._failed(f"expected a JSON report, got {line[:200]!r}") from None
        await asyncio.wait_for(self.process.wait(), timeout=30.0)
        return report

    async def wait_for_stderr(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr_path.read_text(errors="replace"):
            if self.process.returncode is not None:
                raise self._failed(f"exited ({self.process.returncode}) before logging {text!r}")
            if time.monotonic() >= deadline:
                raise self._failed(f"did not log {text!r} within {timeout:g}s")
            await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 30.0) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        assert self.process.returncode is not None
        return self.process.returncode

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()

    @classmethod
    async def kill_all(cls) -> None:
        for child in cls.started:
            child.kill()
            await child.process.wait()
        cls.started.clear()


BROKER_PROCESS = "beam.smp"  # RabbitMQ's Erlang VM: shared with whatever else uses the broker
DATABASE_PROCESS = "postgres"


def janus_env(amqp_url: str, database_url: str) -> dict[str, str]:
    """The environment of a benchmarked `janus run`: URLs given, no HTTP port, INFO logs."""
    env = {
        **os.environ,
        "JANUS_AMQP_URL": amqp_url,
        "JANUS_DATABASE_URL": database_url,
        "JANUS_HTTP_PORT": "0",
        "JANUS_LOG_LEVEL": "INFO",
    }
    env.pop("JANUS_CONFIG", None)
    return env


def cpu_by_pid(name: str, cmdline_has: str | None = None) -> dict[int, float]:
    """User+system CPU seconds of every local process called `name` (and whose command line has
    `cmdline_has`: a PostgreSQL backend shows its database there)."""
    found: dict[int, float] = {}
    for process in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        times = process.info["cpu_times"]
        if process.info["name"] != name or times is None:
            continue
        if cmdline_has is not None and cmdline_has not in " ".join(process.info["cmdline"] or ()):
            continue
        found[process.pid] = float(times.user + times.system)
    return found


def database_cpu_by_pid(database: str | None) -> dict[int, float]:
    """The backends serving `database` (not PostgreSQL's shared background processes)."""
    return {} if database is None else cpu_by_pid(DATABASE_PROCESS, f" {database} ")


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two snapshots (processes that ended in between are missed); NaN if none ran here."""
    if not after:
        return math.nan
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
