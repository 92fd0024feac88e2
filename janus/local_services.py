"""Fresh vhosts and databases on a RabbitMQ and PostgreSQL the caller administers.

One place for what the demo, the tests and the benchmarks all need: make an
isolated vhost (through `rabbitmqctl`, since the management API may be off) and
an isolated database, and remove them afterwards. Not used by `janus run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import asyncpg

from janus.errors import JanusError

# Database names are interpolated into DDL (identifiers cannot be parameters): keep them plain.
_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_PROTECTED_DATABASES = frozenset({"postgres", "template0", "template1"})
_MARKER = re.compile(r"[A-Za-z0-9 ]{1,200}")  # interpolated into a COMMENT too


@dataclass(frozen=True, kw_only=True, slots=True)
class Scratch:
    """A vhost and a database of the same name, made for one run."""

    name: str
    amqp_url: str
    database_url: str


@dataclass(frozen=True, kw_only=True, slots=True)
class LocalServices:
    amqp_base: str = "amqp://guest:guest@127.0.0.1:5672"  # without the vhost
    pg_base: str = "postgresql://postgres@127.0.0.1:5432"  # without the database
    rabbitmqctl: Sequence[str] = ("rabbitmqctl",)  # e.g. ("docker", "exec", ID, "rabbitmqctl")
    amqp_user: str = "guest"

    def amqp_url(self, vhost: str) -> str:
        return f"{self.amqp_base}/{quote(vhost, safe='')}"

    def pg_url(self, database: str) -> str:
        return f"{self.pg_base}/{database}"

    async def ctl(self, *args: str, check: bool = True) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                *self.rabbitmqctl, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except FileNotFoundError:
            raise JanusError(f"{self.rabbitmqctl[0]} is not on PATH: it is needed to make a vhost") from None
        try:
            out, err = await process.communicate()
        except asyncio.CancelledError:
            # Let it finish: a vhost half made behind our back would outlive the clean-up.
            await process.wait()
            raise
        if check and process.returncode != 0:
            detail = (err or out).decode(errors="replace").strip()
            raise JanusError(f"rabbitmqctl {' '.join(args)} failed: {detail}")

    async def create_vhost(self, name: str, *, replace: bool = False) -> None:
        if replace:
            await self.ctl("delete_vhost", name, check=False)  # absent on a first run
        await self.ctl("add_vhost", name)
        await self.ctl("set_permissions", "-p", name, self.amqp_user, ".*", ".*", ".*")

    async def delete_vhost(self, name: str) -> None:
        await self.ctl("delete_vhost", name)

    async def create_database(
        self, name: str, *, template: str | None = None, replace: bool = False, marker: str | None = None
    ) -> None:
        """Create the database `name` (dropping it first if `replace`); `marker`, a plain text
        (letters, digits, spaces), becomes its comment: who made it (`database_marker`)."""
        check_database_name(name)
        statements = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'] if replace else []
        if template is not None:
            check_database_name(template)
            statements.append(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            statements.append(f'CREATE DATABASE "{name}"')
        if marker is not None:
            if not _MARKER.fullmatch(marker):
                raise JanusError(f"refusing the database marker {marker!r}: letters, digits and spaces only")
            statements.append(f"COMMENT ON DATABASE \"{name}\" IS '{marker}'")
        await self._admin(statements)

    async def database_marker(self, name: str) -> tuple[bool, str | None]:
        """Whether the database `name` exists, and its comment (the `marker` it was created with)."""
        async with self._maintenance() as connection:
            row = await connection.fetchrow(
                "SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1",
                name,
            )
        return (row is not None, row["comment"] if row is not None else None)

    async def connections_to(self, name: str) -> int:
        """How many sessions are connected to the database `name` (0 if it does not exist)."""
        async with self._maintenance() as connection:
            count = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name
            )
        return int(count)

    async def drop_database(self, name: str) -> None:
        check_database_name(name)
        await self._admin([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'])

    @contextlib.asynccontextmanager
    async def scratch(self, prefix: str) -> AsyncIterator[Scratch]:
        """A vhost and a database of their own, named `prefix` and a random tag; both removed
        on the way out, whatever happened."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        await self.create_vhost(name)
        try:
            await self.create_database(name)
            try:
                yield Scratch(name=name, amqp_url=self.amqp_url(name), database_url=self.pg_url(name))
            finally:
                with contextlib.suppress(JanusError, OSError, asyncpg.PostgresError):
                    await self.drop_database(name)
        finally:
            with contextlib.suppress(JanusError):
                await self.delete_vhost(name)

    async def _admin(self, statements: list[str]) -> None:
        async with self._maintenance() as connection:
            for statement in statements:
                await connection.execute(statement)

    @contextlib.asynccontextmanager
    async def _maintenance(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection to the `postgres` database, closed after."""
        try:
            connection = await asyncpg.connect(self.pg_url("postgres"))
        except (OSError, asyncpg.PostgresError) as exc:
            raise JanusError(f"cannot connect to PostgreSQL at {self.pg_base}: {exc}") from exc
        try:
            yield connection
        finally:
            await connection.close()


def check_database_name(name: str) -> None:
    if not _DATABASE_NAME.fullmatch(name) or name in _PROTECTED_DATABASES:
        raise JanusError(f"refusing to (re)create database {name!r}: pick a plain name like janus_demo")
