"""Connecting through a pooler: PgBouncer in transaction mode.

There, each transaction may run on another server connection, so nothing may outlive a
transaction: Janus keeps none (lease rows, not advisory locks; the migration lock is a
transaction's), but asyncpg names and caches prepared statements per connection. A database
URL with `statement_cache_size=0` in its query turns that off (asyncpg then prepares each
statement unnamed, in the same round trip as its execution), for PgBouncer before 1.21 or
without `max_prepared_statements`. PgBouncer also refuses startup parameters it does not
know, so `plan_cache_mode` is then not sent (set it on the role or the database instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

STATEMENT_CACHE_SIZE = "statement_cache_size"


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectOptions:
    url: str  # without the options below: asyncpg would send them as server settings
    statement_cache_size: int | None  # None: asyncpg's default


def connect_options(url: str) -> ConnectOptions:
    """The URL without `statement_cache_size`, and its value; ValueError if it is not a count."""
    if "://" not in url:  # a key=value DSN: taken as it is
        return ConnectOptions(url=url, statement_cache_size=None)
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    sizes = [value for key, value in query if key == STATEMENT_CACHE_SIZE]
    if not sizes:
        return ConnectOptions(url=url, statement_cache_size=None)
    if not sizes[-1].isdigit():
        raise ValueError(f"{STATEMENT_CACHE_SIZE} must be a whole number, got {sizes[-1]!r}")
    rest = urlencode([(key, value) for key, value in query if key != STATEMENT_CACHE_SIZE])
    return ConnectOptions(url=parts._replace(query=rest).geturl(), statement_cache_size=int(sizes[-1]))
