"""A throwaway PostgreSQL cluster of a benchmark's own, configured as the benchmark asks.

The machine's shared server has one `shared_buffers` (128 MB) for every database on it, so a
measurement of what sizing it per docs/operations.md buys needs a server of its own: initdb in
a temporary directory, started on a free port of 127.0.0.1 (its socket in that directory,
not the system's), restarted with other settings between phases, and on the way out stopped
and deleted whatever happened (Ctrl-C and SIGTERM included: main() turns SIGTERM into
KeyboardInterrupt). Only a SIGKILL can leave it behind (its directory says `janus-pg-`).

PostgreSQL refuses to run as root: as root, its programs run as the `postgres` OS user
(`runuser`), and the directory is given to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType

BIN = Path(os.environ.get("JANUS_PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"

# Fixed for every phase: what the shared server runs with where the benchmark does not vary it.
BASE_SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "50",
    # The benchmarks vacuum before each round themselves (as autovacuum would, but not during a
    # measured round); the shared server of the earlier figures ran with it off too.
    "autovacuum": "off",
    "log_checkpoints": "on",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivatePostgres:
    """One cluster in `directory`; `start`/`restart` with settings, `url` to reach it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "postgres.log"
        self.port = _free_port()
        self.settings: dict[str, str] = {}
        self.running = False
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam(OS_USER)
            os.chown(directory, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", OS_USER, "--"]

    @property
    def url(self) -> str:
        """The URL without a database, as LocalServices.pg_base wants it."""
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            [*self._as_user, *command], capture_output=True, text=True, check=False, cwd=self.directory
        )
        if result.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}\n{tail}")

    def initdb(self) -> None:
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self, settings: Mapping[str, str]) -> None:
        """Start with BASE_SETTINGS and `settings` (written to postgresql.auto.conf, which a
        restart reads again)."""
        self.settings = {
            **BASE_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": str(self.directory),
            **settings,
        }
        lines = "".join(f"{name} = '{value}'\n" for name, value in self.settings.items())
        (self.data / "postgresql.auto.conf").write_text(lines, encoding="utf-8")
        if self._as_user:
            account = pwd.getpwnam(OS_USER)
            os.chown(self.data / "postgresql.auto.conf", account.pw_uid, account.pw_gid)
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "120", "start")
        self.running = True

    def stop(self) -> None:
        if not self.running or not (self.data / "postmaster.pid").exists():
            # Already stopped: Ctrl-C in a terminal signals the whole process group, the server too.
            self.running = False
            return
        try:  # fast: a clean shutdown (a checkpoint) that does not wait for clients
            self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "300", "stop")
        except RuntimeError:
            self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self.running = False

    def restart(self, settings: Mapping[str, str]) -> None:
        self.stop()
        self.start(settings)

    def describe(self) -> str:
        shown = ("shared_buffers", "checkpoint_timeout", "max_wal_size", "autovacuum")
        return ", ".join(f"{name} {self.settings[name]}" for name in shown if name in self.settings)


@contextlib.contextmanager
def private_postgres(settings: Mapping[str, str]) -> Iterator[PrivatePostgres]:
    """A fresh cluster started with `settings`; stopped and its directory deleted after."""
    directory = Path(tempfile.mkdtemp(prefix="janus-pg-"))
    server = PrivatePostgres(directory)
    try:
        server.initdb()
        server.start(settings)
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def sigterm_as_interrupt() -> None:
    """Let SIGTERM unwind like Ctrl-C, so that the `finally` clauses stop and delete the cluster."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
