"""Forward-only migrations: numbered .sql files applied in order, under an advisory lock.

The transaction-scoped advisory lock makes concurrent `janus run` / `janus migrate`
safe; each file runs in the same transaction as its bookkeeping row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from janus.errors import StoreError

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works; this one spells "janus" in ASCII.
MIGRATION_LOCK = 0x6A616E7573


@dataclass(frozen=True, kw_only=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("janus.store").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(
                Migration(
                    version=int(match.group(1)), name=match.group(2), sql=entry.read_text(encoding="utf-8")
                )
            )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise StoreError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


async def migrate(connection: asyncpg.Connection) -> list[int]:
    """Apply every pending migration; returns the versions applied now."""
    applied_now: list[int] = []
    try:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await connection.execute("CREATE SCHEMA IF NOT EXISTS janus")
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS janus.schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {
                row["version"]
                for row in await connection.fetch("SELECT version FROM janus.schema_migrations")
            }
            for migration in available_migrations():
                if migration.version in done:
                    continue
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO janus.schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
                applied_now.append(migration.version)
    except asyncpg.PostgresError as exc:
        raise StoreError(f"migration failed: {exc}") from exc
    return applied_now
