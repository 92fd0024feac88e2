"""What the broker confirmed, as stored (migration 0006): the outbox of outcomes (the tick statement
writes it, store/session.py; a new term reads what earlier terms left unconfirmed) and the ticks
whose admissions were all confirmed (a new term's "maybe sent" admissions are the others)."""

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
        return [_message(row) for row in rows]

    async def unconfirmed_of(self, dependencies: Sequence[str], before: float) -> list[OutboxMessage]:
        """Member mode: what terms of `dependencies` left unconfirmed, created before `before`."""
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as connection:
                rows = await connection.fetch(sql("outbox_unconfirmed_of"), list(dependencies), before)
        except DB_ERRORS as exc:
            raise StoreError(f"reading the outbox failed: {exc}") from exc
        return [_message(row) for row in rows]

    async def confirmed(
        self, outbox_ids: Sequence[str], sent_ticks: Sequence[float], epoch: int, forget_before: float
    ) -> None:
        """Forget the outcomes the broker confirmed, record the ticks whose admissions it all
        confirmed (or refused), and forget sent ticks older than any lease: one statement."""
        if not (outbox_ids or sent_ticks):
            return
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as connection:
                await connection.fetchrow(
                    sql("confirmations"), list(outbox_ids), list(sent_ticks), epoch, forget_before
                )
        except DB_ERRORS as exc:
            raise StoreError(f"recording the broker's confirms failed: {exc}") from exc


def _message(row: asyncpg.Record) -> OutboxMessage:
    return OutboxMessage(
        id=str(row["id"]), job_id=row["job_id"], routing_key=row["routing_key"], body=row["body"].encode()
    )
