"""`janus migrate --create`: create the database a URL names, if it does not exist yet.

Janus never creates its database by itself (`janus run` stops with one line when it is
missing): a typo in a URL must not quietly start a second, empty Janus. The operator
asks for it once.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg

from janus.errors import ConnectionSettingsError, StoreError
from janus.store.queries import sql
from janus.store.refusals import settings_error
from janus.urls import redact, url_path_name, url_user

# Where to connect to create another database: every cluster has these two.
_MAINTENANCE_DATABASES = ("postgres", "template1")


def _quote_identifier(name: str) -> str:
    # CREATE DATABASE takes an identifier, which no statement parameter can stand for.
    return '"' + name.replace('"', '""') + '"'


async def _maintenance_connection(url: str, timeout: float) -> asyncpg.Connection:
    parts = urlsplit(url)
    last: BaseException | None = None
    for database in _MAINTENANCE_DATABASES:
        maintenance = parts._replace(path=f"/{database}").geturl()
        try:
            return await asyncpg.connect(maintenance, timeout=timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            refused = settings_error(exc, maintenance)
            if refused is not None and getattr(exc, "sqlstate", None) != "3D000":
                raise refused from exc
            last = exc
    raise StoreError(f"cannot connect to PostgreSQL at {redact(url)}: {last}") from last


async def create_database(url: str, *, timeout: float = 10.0) -> str | None:
    """Create the database `url` names; its name if it was created, None if it existed already."""
    name = url_path_name(url) or url_user(url)
    if not name:
        raise ConnectionSettingsError(f"{redact(url)} names no database")
    connection = await _maintenance_connection(url, timeout)
    try:
        if await connection.fetchval(sql("database_exists"), name):
            return None
        await connection.execute(f"CREATE DATABASE {_quote_identifier(name)}")
    except asyncpg.DuplicateDatabaseError:
        return None  # created meanwhile by someone else: it exists, which is what was asked
    except asyncpg.InsufficientPrivilegeError as exc:
        raise ConnectionSettingsError(
            f"user {url_user(url)!r} may not create database {name!r} on {redact(url)}: {exc}"
        ) from exc
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreError(f"creating database {name!r} failed: {exc}") from exc
    finally:
        await connection.close()
    return name
