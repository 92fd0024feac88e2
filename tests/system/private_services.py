"""A private PostgreSQL cluster and a private RabbitMQ node, for tests that restart them.

The shared services must never be restarted (other people test against them), so a
test that restarts a service starts its own: in a temporary directory, on free
ports, listening on 127.0.0.1 only, and always stopped at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import aio_pika
import asyncpg


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> str:
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({process.returncode}): {text}")
    return text


class PrivatePostgres:
    """`initdb` into a temporary directory, `pg_ctl` to start, stop and restart it."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        found = bins[-1] if bins else shutil.which("initdb")
        if found is None:
            raise RuntimeError("initdb not found")
        self._bin = Path(found).parent
        self.directory = Path(tempfile.mkdtemp(prefix="janus-pg-"))
        self.port = free_port()
        # PostgreSQL refuses to run as root: as root, run it as the postgres user.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.directory, user="postgres")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def _ctl(self, *args: str) -> None:
        await _run(*self._as, str(self._bin / "pg_ctl"), "-D", str(self.directory / "data"), *args)

    async def start(self, settings: dict[str, str] | None = None) -> None:
        """Start it (`initdb` first if it has no data yet), with `settings` as `-c` options."""
        if not (self.directory / "data").exists():
            await _run(
                *self._as,
                str(self._bin / "initdb"),
                "-D",
                str(self.directory / "data"),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            )
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += "".join(f" -c {name}={value}" for name, value in (settings or {}).items())
        await self._ctl("-l", str(self.directory / "log"), "-w", "-o", options, "start")

    async def clone_as_standby(self, primary: PrivatePostgres) -> None:
        """This cluster's data, copied from the running `primary` with `pg_basebackup`, set up
        to stream from it (a hot standby; start it with `start`, promote it with `promote`)."""
        await _run(
            *self._as,
            str(self._bin / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(self.directory / "data"),
            "-R",  # standby.signal and primary_conninfo
            "-X",
            "stream",
            "--no-sync",
            "--checkpoint=fast",  # else it waits for a spread checkpoint: minutes
        )

    async def promote(self) -> None:
        await self._ctl("-w", "promote")

    async def stop(self, mode: str = "fast") -> None:
        """`fast` disconnects every client (what a restart does to Janus); `immediate` is a crash."""
        await self._ctl("-m", mode, "-w", "stop")

    async def create_database(self, name: str) -> str:
        connection = await asyncpg.connect(self.url())
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return self.url(name)

    async def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):  # not running
            await self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


class PrivateRabbitMQ:
    """A RabbitMQ node of its own (name, ports, data and logs in a temporary directory)."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="janus-rmq-"))
        self.node = f"janus-test-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        (self.directory / "home").mkdir()
        (self.directory / "enabled_plugins").write_text("[].\n")
        self._env = {
            **os.environ,
            "HOME": str(self.directory / "home"),  # its own Erlang cookie, shared with its rabbitmqctl
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq"),  # none: the defaults
        }
        # The packaged wrappers switch to the rabbitmq user; the real scripts run as anyone.
        real = Path("/usr/lib/rabbitmq/bin")
        self._server = str(real / "rabbitmq-server") if real.exists() else "rabbitmq-server"
        self._ctl = str(real / "rabbitmqctl") if real.exists() else "rabbitmqctl"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def start(self, timeout: float = 60.0) -> None:
        await _run(self._server, "-detached", env=self._env)
        async with asyncio.timeout(timeout):
            while True:  # answering AMQP, not merely booting
                try:
                    connection = await aio_pika.connect(self.url, timeout=2)
                except (OSError, aio_pika.exceptions.AMQPError, TimeoutError):
                    await asyncio.sleep(0.2)
                    continue
                await connection.close()
                return

    async def stop(self) -> None:
        await _run(self._ctl, "-n", self.node, "stop", env=self._env)

    async def destroy(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError):  # not running
            await self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
