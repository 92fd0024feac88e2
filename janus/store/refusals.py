"""PostgreSQL's refusals of the connection settings, told apart from its outages.

A database that does not exist, a role or password refused, a malformed URL: trying
again cannot help, so they become `ConnectionSettingsError` and the caller stops with
one line. Anything else at connect time (refused, timed out, the server starting up or
out of connection slots) is an outage: `StoreError`, and Janus reconnects.
"""

from __future__ import annotations

import asyncpg

from janus.errors import ConnectionSettingsError
from janus.urls import redact, url_path_name, url_user

# SQLSTATEs of refused settings: 3D000 no such database, 28000 no such role or no pg_hba
# entry, 28P01 wrong password, 42501 no CONNECT privilege on the database.
_MISSING_DATABASE = "3D000"
_REFUSED_LOGIN = frozenset({"28000", "28P01", "42501"})


def settings_error(exc: BaseException, url: str) -> ConnectionSettingsError | None:
    where = f"PostgreSQL at {redact(url)}"
    state = getattr(exc, "sqlstate", None)
    if state == _MISSING_DATABASE:
        database = url_path_name(url) or url_user(url) or "?"
        return ConnectionSettingsError(
            f"{where}: database {database!r} does not exist (create it: janus migrate --create)"
        )
    if state in _REFUSED_LOGIN:
        return ConnectionSettingsError(f"{where} refused user {url_user(url)!r}: {exc}")
    if isinstance(exc, ValueError | asyncpg.ClientConfigurationError):
        return ConnectionSettingsError(f"invalid PostgreSQL URL {redact(url)}: {exc}")
    return None
