"""Gallery sessions: a random id in the signed cookie, a hash of it in the database.

A session ends when its user logs out (the row is deleted, so a copied cookie opens nothing), when it
expires, and when its caller is no longer configured. Rows in the database, not state in the process,
so that several replicas can share them and a restart keeps people signed in.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Container
from datetime import UTC, datetime, timedelta

from app.storage.database import RecordStore

SESSION_TTL_S = 12 * 3600


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def start_session(store: RecordStore, caller: str, ttl_s: int = SESSION_TTL_S) -> str:
    """A new session for `caller`; returns the id to put in the (signed) cookie."""
    session_id = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(seconds=ttl_s)
    await store.add_session(_hash(session_id), caller,
                            expires.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    return session_id


async def session_caller(store: RecordStore, session_id: str, configured: Container[str]) -> str | None:
    """The caller of a live session whose caller is still configured, else None."""
    caller = await store.session_caller(_hash(session_id))
    return caller if caller is not None and caller in configured else None


async def end_session(store: RecordStore, session_id: str) -> None:
    await store.end_session(_hash(session_id))
