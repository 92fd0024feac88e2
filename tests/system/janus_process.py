"""`janus run` as a real child process, for tests that kill, stop and restart it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

FAST_TIMINGS = {
    "JANUS_LEADER_LEASE": "2",
    "JANUS_LEADER_RENEW_EVERY": "0.3",
    "JANUS_STANDBY_POLL_EVERY": "0.2",
}
DEFAULT_TIMINGS: dict[str, str] = {}  # the defaults of janus.config.Settings

_ADMITTING = re.compile(r"admitting as \S+ in epoch (\d+)")


class JanusProcess:
    def __init__(self, config_path: Path, *, name: str, env: Mapping[str, str] | None = None) -> None:
        self.config_path = config_path
        self.name = name
        self.env = dict(FAST_TIMINGS if env is None else env)
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.admitting: list[tuple[float, int]] = []  # (loop time, epoch) each time a term began admitting
        self._leading = asyncio.Event()
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {
            **os.environ,
            "JANUS_HTTP_PORT": "0",
            "JANUS_LOG_LEVEL": "INFO",
            **self.env,
        }
        self._leading.clear()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "janus.cli",
            "run",
            "--config",
            str(self.config_path),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read(self.process))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if "leading as" in line:
                self._leading.set()
            match = _ADMITTING.search(line)
            if match:
                self.admitting.append((asyncio.get_running_loop().time(), int(match.group(1))))
            async with self._changed:
                self._changed.notify_all()

    async def wait_line(self, pattern: str, timeout: float, *, after: int = 0) -> str:
        """The first log line from index `after` on that matches `pattern` (a regex)."""
        compiled = re.compile(pattern)

        def found() -> str | None:
            return next((line for line in self.lines[after:] if compiled.search(line)), None)

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        line = found()
        assert line is not None
        return line

    async def wait_admitting(self, timeout: float, *, after: float = float("-inf")) -> tuple[float, int]:
        """(loop time, epoch) of the first term that began admitting after loop time `after`."""

        def found() -> tuple[float, int] | None:
            return next((a for a in self.admitting if a[0] > after), None)

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        result = found()
        assert result is not None
        return result

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def wait_leading(self, timeout: float = 20.0) -> None:
        await asyncio.wait_for(self._leading.wait(), timeout)

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    async def kill(self) -> None:
        """kill -9: no drain, no lease release, nothing flushed."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        if self._reader is not None:
            await self._reader

    async def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def ensure_stopped(self) -> None:
        """Kill the process if it still runs (a test that failed half-way)."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process is killed all the same
            await self.kill()

    def output(self) -> str:
        return "\n".join(self.lines[-40:])
