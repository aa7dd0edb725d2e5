"""Operators' commands for the authorization server: list its clients, end their tokens.

They act on the database the server uses (PIXAZO_DATABASE_URL, SQLite or PostgreSQL), or on `--db FILE`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from app.identity.names import escaped
from app.storage.database import open_store


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def list_clients(database: str) -> list[str]:
    """One entry per client: id, kind, name, registered, first sign-in, last seen and what it last did, live
    tokens. What a client chose (its id, name, callers' names) is printed with control characters escaped."""
    store = await open_store(database)
    try:
        summaries = await store.oauth().clients()
    finally:
        await store.close()
    if not summaries:
        return ["no OAuth clients yet"]
    lines = []
    for s in summaries:
        c = s.client
        callers = escaped(", ".join(s.callers)) if s.callers else "-"
        first = f"first sign-in {_when(c.signed_in_at)}" if c.signed_in_at is not None else "never signed in"
        lines.append(f"{escaped(c.client_id)}  [{escaped(c.kind)}] {escaped(c.client_name or '(no name)')}\n"
                     f"    registered {_when(c.created_at)}; {first}; last seen {_when(c.last_seen_at)}: "
                     f"{escaped(c.last_event or '-')}\n"
                     f"    live tokens: {s.active_tokens} (callers: {callers})")
    return lines


async def revoke(database: str, client_id: str | None, caller: str | None) -> tuple[bool, str]:
    """(found, message). Ends every token of one client, or every token signed in as one caller."""
    store = await open_store(database)
    try:
        records = store.oauth()
        if client_id is not None:
            if await records.client(client_id) is None:
                return False, f"no OAuth client {client_id!r} (see `pixazo-mcp oauth clients`)"
            count = await records.revoke_client(client_id)
            await records.touch_client(client_id, f"revoked by an operator at {_when(time.time())}")
            return True, f"revoked {count} token(s) of client {client_id}"
        count = await records.revoke_caller(caller or "")
        return True, f"revoked {count} token(s) signed in as {caller}"
    finally:
        await store.close()
