"""`janus run` as a real child process, for tests that kill, stop and restart it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path


class JanusProcess:
    def __init__(self, config_path: Path, *, name: str) -> None:
        self.config_path = config_path
        self.name = name
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._leading = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {
            **os.environ,
            "JANUS_HTTP_PORT": "0",
            "JANUS_LEADER_LEASE": "2",
            "JANUS_LEADER_RENEW_EVERY": "0.3",
            "JANUS_STANDBY_POLL_EVERY": "0.2",
            "JANUS_LOG_LEVEL": "INFO",
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
            await self.kill()

    def output(self) -> str:
        return "\n".join(self.lines[-40:])
