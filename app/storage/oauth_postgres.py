"""The OAuth authorization server's SQL on PostgreSQL: OAuthRecords' statements, run on the store's pool.

The statements are the SQLite ones unchanged (ON CONFLICT and RETURNING are common ground); only their
placeholders and the way they reach the database differ, so the three runners are all this overrides.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from app.storage.oauth_records import OAuthRecords


def pg_placeholders(sql: str) -> bytes:
    """`?` placeholders as psycopg's `%s` (a literal `%` doubled first; the OAuth SQL quotes no `?`)."""
    return sql.replace("%", "%%").replace("?", "%s").encode()


class PostgresOAuthRecords(OAuthRecords):
    """Every statement on its own pooled connection in autocommit: one statement, one transaction, as on
    SQLite. Replicas on the same database therefore see each other's clients, codes and tokens at once,
    and a token check (a read) never waits behind a write: under MVCC readers take no row locks."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[DictRow]]) -> None:
        # No SQLite connection: the base class' runners, the only users of one, are all replaced here.
        self._pool = pool

    async def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(pg_placeholders(sql), args)
            return await cur.fetchall()

    async def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        # Any pooled connection is a reader: a snapshot read is not queued behind the writers' locks.
        return await self._rows(sql, args)

    async def _run(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(pg_placeholders(sql), args)
            return cur.rowcount
