"""The OAuth authorization server's SQL: clients, pending sign-ins, codes and tokens.

Every secret (client secret, code, access and refresh token) is stored as its sha256 only; times are
epoch seconds (REAL). Plain SQL on the generations database, so replicas share one view and another
engine only has to run the same statements.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import aiosqlite

# The schema migration that creates these tables lives with the others in app.storage.records.
OAUTH_SCHEMA = """
    CREATE TABLE oauth_clients (
        client_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        client_name TEXT,
        metadata_json TEXT NOT NULL,
        secret_sha256 TEXT,
        created_at REAL NOT NULL,
        last_seen_at REAL,
        last_event TEXT
    );
    CREATE TABLE oauth_requests (
        id_sha256 TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        params_json TEXT NOT NULL,
        expires_at REAL NOT NULL,
        sso_state_sha256 TEXT,
        sso_json TEXT
    );
    CREATE INDEX oauth_requests_sso ON oauth_requests (sso_state_sha256);
    CREATE TABLE oauth_codes (
        code_sha256 TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        caller TEXT NOT NULL,
        params_json TEXT NOT NULL,
        family TEXT NOT NULL,
        expires_at REAL NOT NULL,
        used_at REAL
    );
    CREATE TABLE oauth_tokens (
        token_sha256 TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        client_id TEXT NOT NULL,
        caller TEXT NOT NULL,
        scopes TEXT NOT NULL,
        resource TEXT NOT NULL,
        family TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        used_at REAL,
        revoked_at REAL
    );
    CREATE INDEX oauth_tokens_family ON oauth_tokens (family);
    CREATE INDEX oauth_tokens_client ON oauth_tokens (client_id);
    CREATE INDEX oauth_tokens_caller ON oauth_tokens (caller);
"""

ACCESS = "access"
REFRESH = "refresh"
# Rows past their expiry are kept this long (reuse detection, `oauth clients`), then purged.
KEEP_EXPIRED_S = 86400.0


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ClientRow:
    client_id: str
    kind: str  # "dcr" or "cimd"
    client_name: str | None
    metadata: dict[str, Any]
    secret_sha256: str | None
    created_at: float
    last_seen_at: float | None
    last_event: str | None
    signed_in_at: float | None = None  # when someone first signed in through it (None: nobody yet)

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> ClientRow:
        return cls(r["client_id"], r["kind"], r["client_name"], json.loads(r["metadata_json"]), r["secret_sha256"],
                   r["created_at"], r["last_seen_at"], r["last_event"], r["signed_in_at"])


@dataclass(frozen=True)
class PendingRequest:
    client_id: str
    params: dict[str, Any]
    expires_at: float
    sso: dict[str, Any] | None
    failures: int = 0  # wrong tokens given on its sign-in page so far


@dataclass(frozen=True)
class CodeRow:
    client_id: str
    caller: str
    params: dict[str, Any]
    family: str
    expires_at: float
    used_at: float | None


@dataclass(frozen=True)
class TokenRow:
    kind: str
    client_id: str
    caller: str
    scopes: list[str]
    resource: str
    family: str
    created_at: float
    expires_at: float
    used_at: float | None
    revoked_at: float | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TokenRow:
        return cls(row["kind"], row["client_id"], row["caller"], row["scopes"].split(), row["resource"],
                   row["family"], row["created_at"], row["expires_at"], row["used_at"], row["revoked_at"])


@dataclass(frozen=True)
class ClientSummary:
    client: ClientRow
    active_tokens: int
    callers: list[str]


class OAuthRecords:
    """All OAuth queries, on the record store's connection (autocommit: one statement, one transaction).

    Every statement goes through `_rows`, `_read` or `_run`, with `?` placeholders and SQL that
    PostgreSQL accepts as well (ON CONFLICT, RETURNING): another engine overrides those three.
    """

    def __init__(self, conn: aiosqlite.Connection,
                 reading: Callable[[], AbstractAsyncContextManager[aiosqlite.Connection]] | None = None) -> None:
        self._conn = conn
        # Token checks run on every /mcp request: on a reader connection they never wait behind a write.
        self._reading = reading or (lambda: nullcontext(conn))

    async def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows of a statement on the writer (a RETURNING write, or a read that must see the latest)."""
        return [dict(r) for r in await self._conn.execute_fetchall(sql, args)]

    async def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows of a query on a reader connection."""
        async with self._reading() as conn:
            return [dict(r) for r in await conn.execute_fetchall(sql, args)]

    async def _run(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        """A write; how many rows it changed."""
        cur = await self._conn.execute(sql, args)
        return cur.rowcount

    # clients
    async def add_client(self, client_id: str, kind: str, client_name: str | None, metadata: dict[str, Any],
                         secret: str | None) -> None:
        await self._run(
            "INSERT INTO oauth_clients (client_id, kind, client_name, metadata_json, secret_sha256, created_at,"
            " last_seen_at, last_event) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (client_id) DO UPDATE SET client_name = excluded.client_name,"
            " metadata_json = excluded.metadata_json",
            (client_id, kind, client_name, json.dumps(metadata, sort_keys=True),
             digest(secret) if secret else None, time.time(), time.time(), "registered"))

    async def client(self, client_id: str) -> ClientRow | None:
        found = await self._rows("SELECT * FROM oauth_clients WHERE client_id = ?", (client_id,))
        if not found:
            return None
        return ClientRow.from_row(found[0])

    async def touch_client(self, client_id: str, event: str) -> None:
        await self._run("UPDATE oauth_clients SET last_seen_at = ?, last_event = ? WHERE client_id = ?",
                                 (time.time(), event, client_id))

    async def signed_in(self, client_id: str) -> None:
        """Someone signed in through this client: it is kept (clients nobody signs in with expire)."""
        await self._run("UPDATE oauth_clients SET signed_in_at = ? WHERE client_id = ? AND signed_in_at IS NULL",
                        (time.time(), client_id))

    async def purge_unused_clients(self, older_than_s: float) -> int:
        """Forget clients registered more than `older_than_s` ago that nobody ever signed in with."""
        return await self._run("DELETE FROM oauth_clients WHERE signed_in_at IS NULL AND created_at < ?",
                               (time.time() - older_than_s,))

    async def clients(self) -> list[ClientSummary]:
        now = time.time()
        summaries: list[ClientSummary] = []
        for r in await self._rows("SELECT * FROM oauth_clients ORDER BY created_at"):
            client = ClientRow.from_row(r)
            active = await self._rows(
                "SELECT caller FROM oauth_tokens WHERE client_id = ? AND revoked_at IS NULL AND used_at IS NULL"
                " AND expires_at > ?", (client.client_id, now))
            summaries.append(ClientSummary(client, len(active), sorted({a["caller"] for a in active})))
        return summaries

    # pending sign-ins (between /authorize and the sign-in page's answer)
    async def add_request(self, request_id: str, client_id: str, params: dict[str, Any], ttl_s: float,
                          address: str | None = None) -> None:
        now = time.time()
        await self._run("DELETE FROM oauth_requests WHERE expires_at < ?", (now,))
        await self._run(
            "INSERT INTO oauth_requests (id_sha256, client_id, params_json, expires_at, address)"
            " VALUES (?, ?, ?, ?, ?)", (digest(request_id), client_id, json.dumps(params), now + ttl_s, address))

    async def pending_counts(self, client_id: str, address: str) -> tuple[int, int]:
        """Live pending sign-ins of this client, and those asked for from this address."""
        now = time.time()
        by_client = await self._rows("SELECT COUNT(*) AS n FROM oauth_requests WHERE client_id = ? AND expires_at > ?",
                                     (client_id, now))
        by_address = await self._rows("SELECT COUNT(*) AS n FROM oauth_requests WHERE address = ? AND expires_at > ?",
                                      (address, now))
        return int(by_client[0]["n"]), int(by_address[0]["n"])

    async def request_failed(self, request_id: str, limit: int) -> int:
        """Count a wrong token on this pending sign-in; at `limit` the request ends (is deleted).
        Returns the count (0 when the request no longer exists)."""
        found = await self._rows(
            "UPDATE oauth_requests SET failures = failures + 1 WHERE id_sha256 = ? AND expires_at > ?"
            " RETURNING failures", (digest(request_id), time.time()))
        if not found:
            return 0
        failures = int(found[0]["failures"])
        if failures >= limit:
            await self._run("DELETE FROM oauth_requests WHERE id_sha256 = ?", (digest(request_id),))
        return failures

    async def request(self, request_id: str) -> PendingRequest | None:
        found = await self._rows("SELECT * FROM oauth_requests WHERE id_sha256 = ? AND expires_at > ?",
                                 (digest(request_id), time.time()))
        return _pending(found[0]) if found else None

    async def take_request(self, request_id: str) -> PendingRequest | None:
        """The pending sign-in, removed: one answer per request, even when two arrive at once."""
        found = await self._rows("DELETE FROM oauth_requests WHERE id_sha256 = ? AND expires_at > ? RETURNING *",
                                 (digest(request_id), time.time()))
        return _pending(found[0]) if found else None

    async def start_sso(self, request_id: str, sso_state: str, sso: dict[str, Any]) -> bool:
        return await self._run(
            "UPDATE oauth_requests SET sso_state_sha256 = ?, sso_json = ? WHERE id_sha256 = ? AND expires_at > ?",
            (digest(sso_state), json.dumps(sso), digest(request_id), time.time())) == 1

    async def take_sso(self, sso_state: str) -> PendingRequest | None:
        found = await self._rows(
            "DELETE FROM oauth_requests WHERE sso_state_sha256 = ? AND expires_at > ? RETURNING *",
            (digest(sso_state), time.time()))
        return _pending(found[0]) if found else None

    # authorization codes
    async def add_code(self, code: str, client_id: str, caller: str, params: dict[str, Any], family: str,
                       ttl_s: float) -> None:
        now = time.time()
        # Housekeeping once per sign-in (rare next to requests): rows long expired go.
        await self._run("DELETE FROM oauth_codes WHERE expires_at < ?", (now - KEEP_EXPIRED_S,))
        await self._run("DELETE FROM oauth_tokens WHERE expires_at < ?", (now - KEEP_EXPIRED_S,))
        await self._run(
            "INSERT INTO oauth_codes (code_sha256, client_id, caller, params_json, family, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)", (digest(code), client_id, caller, json.dumps(params), family, now + ttl_s))

    async def code(self, code: str) -> CodeRow | None:
        found = await self._rows("SELECT * FROM oauth_codes WHERE code_sha256 = ?", (digest(code),))
        if not found:
            return None
        r = found[0]
        return CodeRow(r["client_id"], r["caller"], json.loads(r["params_json"]), r["family"], r["expires_at"],
                       r["used_at"])

    async def use_code(self, code: str) -> bool:
        """Mark the code used; False when it already was (a replay, or a race with another exchange)."""
        return await self._run(
            "UPDATE oauth_codes SET used_at = ? WHERE code_sha256 = ? AND used_at IS NULL AND expires_at > ?",
            (time.time(), digest(code), time.time())) == 1

    # tokens
    async def add_token(self, token: str, kind: str, client_id: str, caller: str, scopes: list[str],
                        resource: str, family: str, ttl_s: float) -> None:
        now = time.time()
        await self._run(
            "INSERT INTO oauth_tokens (token_sha256, kind, client_id, caller, scopes, resource, family, created_at,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (digest(token), kind, client_id, caller, " ".join(scopes), resource, family, now, now + ttl_s))

    async def token(self, token: str, kind: str) -> TokenRow | None:
        found = await self._read("SELECT * FROM oauth_tokens WHERE token_sha256 = ? AND kind = ?",
                                 (digest(token), kind))
        return TokenRow.from_row(found[0]) if found else None

    async def use_refresh(self, token: str) -> bool:
        """Mark a refresh token spent (rotation); False when it was spent, revoked or expired already."""
        now = time.time()
        return await self._run(
            "UPDATE oauth_tokens SET used_at = ? WHERE token_sha256 = ? AND kind = ? AND used_at IS NULL"
            " AND revoked_at IS NULL AND expires_at > ?", (now, digest(token), REFRESH, now)) == 1

    async def revoke_family(self, family: str) -> int:
        return await self._run(
            "UPDATE oauth_tokens SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL", (time.time(), family))

    async def revoke_client(self, client_id: str) -> int:
        count = await self._run(
            "UPDATE oauth_tokens SET revoked_at = ? WHERE client_id = ? AND revoked_at IS NULL",
            (time.time(), client_id))
        await self._run("UPDATE oauth_codes SET used_at = ? WHERE client_id = ? AND used_at IS NULL",
                        (time.time(), client_id))
        return count

    async def revoke_caller(self, caller: str) -> int:
        count = await self._run(
            "UPDATE oauth_tokens SET revoked_at = ? WHERE caller = ? AND revoked_at IS NULL", (time.time(), caller))
        await self._run("UPDATE oauth_codes SET used_at = ? WHERE caller = ? AND used_at IS NULL",
                        (time.time(), caller))
        return count


def _pending(r: Mapping[str, Any]) -> PendingRequest:
    return PendingRequest(r["client_id"], json.loads(r["params_json"]), r["expires_at"],
                          json.loads(r["sso_json"]) if r["sso_json"] else None, int(r["failures"] or 0))
