"""A benchmark's own vhost and database, with Janus's schema, for runs that start the
service in-process (a `janus run` child migrates its database itself)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from janus.local_services import LocalServices
from janus.store.migrate import migrate


@contextlib.asynccontextmanager
async def migrated_scratch(local: LocalServices, prefix: str) -> AsyncIterator[tuple[str, str]]:
    """(database_url, amqp_url) of a fresh, migrated database and a fresh vhost; both removed after."""
    async with local.scratch(prefix) as scratch:
        connection = await asyncpg.connect(scratch.database_url)
        try:
            await migrate(connection)
        finally:
            await connection.close()
        yield scratch.database_url, scratch.amqp_url
