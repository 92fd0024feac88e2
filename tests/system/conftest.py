"""System tests start real `janus run` processes: none may outlive its test, even a failing one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest

from tests.system.janus_process import JanusProcess


@pytest.fixture
async def janus_process() -> AsyncIterator[Callable[..., JanusProcess]]:
    started: list[JanusProcess] = []

    def make(config_path: Path, name: str = "janus", env: Mapping[str, str] | None = None) -> JanusProcess:
        process = JanusProcess(config_path, name=name, env=env)
        started.append(process)
        return process

    yield make
    for process in started:
        await process.ensure_stopped()
