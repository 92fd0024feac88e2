"""The outbox of outcomes as stored (migration 0006): the tick statement writes it (store/session.py);
here a new term reads what earlier terms left unconfirmed, and confirmed messages are deleted."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from janus.core.outbox import OutboxMessage
from janus.errors import StoreError
from janus.store.queries import sql
from janus.store.rows import DB_ERRORS


class OutboxStore:
    """Each call on a pooled connection of its own, with a deadline (never the tick's connection)."""

    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout

    async def unconfirmed(self, before_epoch: int) -> list[OutboxMessage]:
        """What terms before `before_epoch` committed and never saw confirmed, oldest first."""
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as connection:
                rows = await connection.fetch(sql("outbox_unconfirmed"), before_epoch)
        except DB_ERRORS as exc:
            raise StoreError(f"reading the outbox failed: {exc}") from exc
        return [
            OutboxMessage(
                id=str(row["id"]),
                job_id=row["job_id"],
                routing_key=row["routing_key"],
                body=row["body"].encode(),
            )
            for row in rows
        ]

    async def delete_confirmed(self, ids: Sequence[str]) -> int:
        """Forget messages the broker confirmed: one statement for the lot."""
        if not ids:
            return 0
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as connection:
                status: str = await connection.execute(sql("outbox_confirmed"), list(ids))
        except DB_ERRORS as exc:
            raise StoreError(f"pruning the outbox failed: {exc}") from exc
        return int(status.split()[-1])
