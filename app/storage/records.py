"""The only SQL: the `generations` table, its migrations, and the queries on it."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import aiosqlite

from app.net import is_http_url
from app.storage.finishes import poll_until_finished
from app.storage.oauth_records import OAuthRecords
from app.storage.rows import (
    BUDGET_EPSILON,
    BUDGET_EXCEEDED,
    INTERRUPTED_ERROR,
    RATE_LIMITED,
    Admission,
    CallMeta,
    Instance,
    Usage,
    refused_by,
)
from app.storage.sqlite_schema import MIGRATIONS, SCHEMA_VERSION

PENDING = "PENDING"
# The MCP resource of a generation's stored image; the server's template and reads use the same.
IMAGE_URI = "pixazo://generations/{id}/image"
# Ids are SQLite rowids: 1 ... 2^63-1. Every id a caller gives (tool argument, path, query, resource
# URI) is bounded by these, so no value can overflow SQLite's 64-bit integers.
MIN_ID = 1
MAX_ID = 2**63 - 1
# ASCII digits only: str.isdigit() also accepts '²' (int() then fails) and U+0661, the Arabic-Indic
# one (int() reads it as 1).
_ID_TEXT = re.compile(r"[0-9]{1,19}")


def parse_generation_id(raw: str | None) -> int | None:
    """A generation id from a path, query parameter or resource URI, or None when it cannot be one.

    The one parser for ids in text: every route and resource template uses it."""
    if raw is None or not _ID_TEXT.fullmatch(raw):
        return None
    value = int(raw)
    return value if MIN_ID <= value <= MAX_ID else None


INTERRUPTED = "INTERRUPTED"
BUSY_TIMEOUT_MS = 5000  # how long a write waits for the lock before it fails
READERS = 2  # reader connections: reads run beside the writer and beside each other
PROBE_TIMEOUT_S = 1.0  # /healthz: longer than any of our own writes holds the lock


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_utc(stamp: str) -> datetime:
    """A row's timestamp (utc_now's format; one without a zone is taken as UTC) as an aware datetime."""
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)



@dataclass(frozen=True)
class Generation:
    """One row of `generations`."""

    id: int
    timestamp: str
    prompt: str
    parameters: dict[str, Any]
    image_url: str | None
    status: str
    error: str | None
    http_status: int | None
    duration_ms: int | None
    finished_at: str | None
    image_path: str | None = None
    image_bytes: int | None = None
    image_sha256: str | None = None
    image_mime: str | None = None
    attempts: int | None = None
    queue_ms: int | None = None
    caller: str | None = None
    # Pixazo's own words (an error body, an unusable answer): for operators, never in public().
    upstream_error: str | None = None
    model: str = "sdxl"
    operation: str = "generate"
    parent_id: int | None = None  # the generation this one was made from (an edit, a regeneration)
    cost_usd: float | None = None  # None: not recorded (an unknown price)
    # Pixazo's queue job id while a submitted job is polled: internal, never in public().
    request_id: str | None = None
    # The team style applied (PIXAZO_STYLES_FILE): `prompt` is then the expanded prompt, as sent.
    style: str | None = None
    # What the stored image carries (xmp, xmp+c2pa; a failed signing says why): app.storage.provenance.
    provenance: str | None = None
    batch_id: str | None = None  # the images of one call with `n` > 1 (variations) share it

    @property
    def resource_uri(self) -> str | None:
        return IMAGE_URI.format(id=self.id) if self.image_path else None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Generation:
        return cls(
            id=row["id"], timestamp=row["timestamp"], prompt=row["prompt"],
            parameters=json.loads(row["parameters_json"]), image_url=row["image_url"],
            status=row["status"], error=row["error"], http_status=row["http_status"],
            duration_ms=row["duration_ms"], finished_at=row["finished_at"],
            image_path=row.get("image_path"), image_bytes=row.get("image_bytes"),
            image_sha256=row.get("image_sha256"), image_mime=row.get("image_mime"),
            attempts=row.get("attempts"), queue_ms=row.get("queue_ms"), caller=row.get("caller"),
            upstream_error=row.get("upstream_error"), model=row.get("model") or "sdxl",
            operation=row.get("operation") or "generate", parent_id=row.get("parent_id"),
            cost_usd=row.get("cost_usd"), request_id=row.get("request_id"), style=row.get("style"),
            provenance=row.get("provenance"), batch_id=row.get("batch_id"),
        )

    def public(self) -> dict[str, Any]:
        """The row as any caller may see it: no file path, no upstream text (`upstream_error`)."""
        return {
            "id": self.id, "created_at": self.timestamp, "prompt": self.prompt,
            # Rows written before URLs were checked may hold anything: only http(s) leaves the server.
            "parameters": self.parameters, "image_url": self.image_url if is_http_url(self.image_url) else None,
            "status": self.status,
            "error": self.error, "http_status": self.http_status, "duration_ms": self.duration_ms,
            "finished_at": self.finished_at, "resource_uri": self.resource_uri,
            "image_mime": self.image_mime, "image_bytes": self.image_bytes, "image_sha256": self.image_sha256,
            "attempts": self.attempts, "caller": self.caller, "model": self.model, "operation": self.operation,
            "parent_id": self.parent_id, "cost_usd": self.cost_usd, "style": self.style,
            "batch_id": self.batch_id,
        }


class StoredImageInfo(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def mime(self) -> str: ...
    @property
    def provenance(self) -> str | None: ...


def query_words(text: str) -> list[str]:
    """A caller's search as plain words (at most 16); every engine builds its query from these."""
    return [w for w in "".join(c if c.isalnum() else " " for c in text).split() if w][:16]


def fts_query(text: str) -> str | None:
    """A caller's words as an FTS5 query: every word must match (as a prefix); no FTS syntax leaks."""
    words = query_words(text)
    if not words:
        return None
    return " ".join('"' + w.replace('"', '""') + '"*' for w in words)


# SQLite's own clock in epoch seconds (leases compare times taken from one clock: the database's).
SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


async def _open_reader(path: Path) -> aiosqlite.Connection:
    reader = await aiosqlite.connect(path, isolation_level=None)
    reader.row_factory = aiosqlite.Row
    try:
        await reader.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        await reader.execute("PRAGMA query_only=ON")  # a reader never writes, by construction
    except BaseException:
        await reader.close()
        raise
    return reader


def _probe_write(path: Path, timeout_s: float) -> str | None:
    """The blocking half of GenerationStore.write_problem (runs in a worker thread)."""
    try:
        # mode=rw: a deleted file is a problem to report, not an empty database to create.
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=rw", uri=True, timeout=timeout_s,
                               isolation_level=None)
    except sqlite3.Error as exc:
        return f"cannot open the database ({exc})"
    try:
        conn.execute("BEGIN IMMEDIATE")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute("SELECT id, status FROM generations ORDER BY id DESC LIMIT 1").fetchall()
        # Rewriting the header page with the value it has makes the commit write a WAL frame.
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return f"the write lock is held elsewhere (waited {timeout_s:g} s)"
        return f"a write failed ({exc})"
    except sqlite3.Error as exc:
        return f"the database is damaged ({exc})"
    finally:
        conn.close()
    return None


class GenerationStore:
    """One writer connection (one aiosqlite thread) and a few reader connections, in WAL mode.

    Reads never queue behind writes: WAL lets readers run while a writer holds the lock, and each
    reader has its own thread. A blocked write (another process holding the lock) stalls only writes.
    """

    engine = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: Path | None = None,
                 readers: list[aiosqlite.Connection] | None = None, owner: Instance | None = None) -> None:
        self._conn = conn
        self._path = path
        self.owner = owner or Instance()
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all_readers = list(readers or [])
        for reader in self._all_readers:
            self._readers.put_nowait(reader)

    @classmethod
    async def open(cls, path: Path, owner: Instance | None = None) -> GenerationStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each statement is its own transaction, so a write is one trip to the
        # connection's thread instead of two (execute, then commit).
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        readers: list[aiosqlite.Connection] = []
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await cls(conn)._migrate()
            for _ in range(READERS):
                readers.append(await _open_reader(path))
        except BaseException:
            for reader in readers:
                await reader.close()
            await conn.close()
            raise
        return cls(conn, path, readers, owner)

    async def close(self) -> None:
        for reader in self._all_readers:
            await reader.close()
        await self._conn.close()

    def oauth(self) -> OAuthRecords:
        """The OAuth authorization server's tables, in the same database (replicas share them)."""
        return OAuthRecords(self._conn, self._reading)

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """A reader connection for one query (the writer when the store was built without readers)."""
        if not self._all_readers:
            yield self._conn
            return
        reader = await self._readers.get()
        try:
            yield reader
        finally:
            self._readers.put_nowait(reader)

    async def write_problem(self, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
        """None when a write can succeed now, else why not (for /healthz).

        Cheap, and not queued behind our own writes: a fresh connection (so nothing cached hides a
        damaged file) takes the write lock, reads the schema and the newest row, rewrites the header
        page and commits (so a full disk shows), all within `timeout_s`.
        """
        if self._path is None:  # pragma: no cover - stores are always opened from a path
            return None
        return await asyncio.to_thread(_probe_write, self._path, timeout_s)

    async def schema_version(self) -> int:
        async with self._conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self) -> None:
        version = await self.schema_version()
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"database schema {version} is newer than this server ({SCHEMA_VERSION})")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            # executescript commits first; the script and the version bump then commit together.
            await self._conn.executescript(
                f"BEGIN;\n{MIGRATIONS[target - 1]}\nPRAGMA user_version = {target};\nCOMMIT;"
            )

    async def ping(self) -> bool:
        async with self._reading() as conn, conn.execute("SELECT 1") as cur:
            return (await cur.fetchone()) is not None

    async def renew_lease(self, lease_s: float) -> None:
        """Claim (or extend) this instance's calls in flight for another `lease_s` seconds."""
        await self._conn.execute(
            "INSERT INTO instances (id, host, pid, started_at, expires_at)"  # noqa: S608 - fixed SQL fragments; values go as parameters
            f" VALUES (?, ?, ?, ?, {SQLITE_NOW} + ?)"
            " ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
            (self.owner.id, self.owner.host, self.owner.pid, utc_now(), lease_s))

    async def same_host_instances(self) -> list[tuple[str, int]]:
        """Other instances on this machine (and pid namespace): their pids can be checked directly."""
        found = await self._conn.execute_fetchall(
            "SELECT id, pid FROM instances WHERE host = ? AND id != ?", (self.owner.host, self.owner.id))
        return [(str(r[0]), int(r[1])) for r in found]

    def _lapsed(self, dead: list[str]) -> tuple[str, tuple[Any, ...]]:
        """The condition (and its values) for a row whose owner is gone: no owner, a process known to be
        gone (`dead`), or no live lease; never this instance."""
        marks = ", ".join("?" for _ in dead) or "NULL"
        return (f"owner IS NOT ? AND (owner IS NULL OR owner IN ({marks}) OR NOT EXISTS (SELECT 1 FROM"  # noqa: S608 - placeholders only
                f" instances i WHERE i.id = generations.owner AND i.expires_at > {SQLITE_NOW}))",
                (self.owner.id, *dead))

    async def reap_lapsed(self, dead: list[str]) -> int:
        """PENDING rows whose owner's lease lapsed (or whose owner process is gone: `dead`) become
        INTERRUPTED, never re-sent (the generation may have been paid). Live owners' rows stay, and so
        do submitted queue jobs (a request id): they are resumed (claim_jobs), not given up."""
        lapsed, values = self._lapsed(dead)
        cur = await self._conn.execute(
            "UPDATE generations SET status = ?, error = ?, finished_at = ?"  # noqa: S608 - fixed SQL fragments; values go as parameters
            f" WHERE status = ? AND request_id IS NULL AND operation <> 'upload' AND {lapsed}",
            (INTERRUPTED, INTERRUPTED_ERROR, utc_now(), PENDING, *values))
        marks = ", ".join("?" for _ in dead) or "NULL"
        await self._conn.execute(
            f"DELETE FROM instances WHERE id != ? AND (id IN ({marks}) OR expires_at <= {SQLITE_NOW})",  # noqa: S608
            (self.owner.id, *dead))
        return cur.rowcount

    async def claim_jobs(self, dead: list[str]) -> list[Generation]:
        """Take over the submitted queue jobs (PENDING with a request id) whose owner is gone, by the
        rule of reap_lapsed, and return them (oldest first) for this instance to resume polling.

        One statement under SQLite's single writer: each row goes to exactly one claimer. Renew this
        instance's lease first, or another instance may take the rows straight back."""
        lapsed, values = self._lapsed(dead)
        found = await self._conn.execute_fetchall(
            # The status as a literal: the partial index on submitted jobs matches it (a parameter would not).
            f"UPDATE generations SET owner = ? WHERE status = '{PENDING}' AND request_id IS NOT NULL AND {lapsed}"  # noqa: S608 - fixed SQL fragments; values go as parameters
            " RETURNING *", (self.owner.id, *values))
        return sorted((Generation.from_row(dict(r)) for r in found), key=lambda g: g.id)

    async def release(self) -> int:
        """On a clean stop: this instance's own rows still PENDING end INTERRUPTED; its lease ends.
        Submitted queue jobs stay PENDING with no owner, so that any instance may resume them at once.
        Returns how many rows ended INTERRUPTED."""
        await self._conn.execute(
            "UPDATE generations SET owner = NULL WHERE status = ? AND owner = ?"
            " AND (request_id IS NOT NULL OR operation = 'upload')",
            (PENDING, self.owner.id))
        cur = await self._conn.execute(
            "UPDATE generations SET status = ?, error = ?, finished_at = ? WHERE status = ? AND owner = ?"
            " AND operation <> 'upload'",
            (INTERRUPTED, INTERRUPTED_ERROR, utc_now(), PENDING, self.owner.id))
        await self._conn.execute("DELETE FROM instances WHERE id = ?", (self.owner.id,))
        return cur.rowcount

    async def insert_pending(self, prompt: str, parameters: dict[str, Any], caller: str | None = None,
                             status: str = PENDING, *, meta: CallMeta | None = None) -> Generation:
        meta = meta or CallMeta()
        created = utc_now()
        # allow_nan=False: NaN and Infinity are not JSON (json_valid() refuses them); never store them.
        params_json = json.dumps(parameters, ensure_ascii=False, sort_keys=True, allow_nan=False)
        # execute_fetchall: one trip to the connection's thread and no cursor left to close.
        inserted = list(await self._conn.execute_fetchall(
            "INSERT INTO generations (timestamp, prompt, parameters_json, status, caller, owner, model, operation,"
            " parent_id, cost_usd, style, batch_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (created, prompt, params_json, status, caller, self.owner.id, meta.model, meta.operation,
             meta.parent_id, meta.cost_usd, meta.style, meta.batch_id),
        ))
        gen_id = int(inserted[0][0])
        return Generation(gen_id, created, prompt, parameters, None, status, None, None, None, None,
                          caller=caller, model=meta.model, operation=meta.operation, parent_id=meta.parent_id,
                          cost_usd=meta.cost_usd, style=meta.style, batch_id=meta.batch_id)

    async def insert_admitted(self, prompt: str, parameters: dict[str, Any] | list[dict[str, Any]],
                              caller: str | None, *, per_minute: int | None, daily: int | None, minute_since: str,
                              day_since: str, meta: CallMeta | None = None,
                              budget_usd: float | None = None, max_pending: int | None = None) -> Admission:
        """Count the caller's calls (and sum its spend) and insert this one in one statement: SQLite's
        single writer makes it atomic across every connection and process, so the allowance and the
        budget are exact. Limits are checked first (unfinished calls, per-minute, daily), then the
        budget: this call's price (`meta.cost_usd`, None as 0) must fit in what the caller has left
        today. A refused call's row is written finished (RATE_LIMITED or BUDGET_EXCEEDED), nothing charged.

        A list of parameters is a batch (variations): one row each, all admitted or all refused, the
        limits and the budget counting every one of them."""
        meta = meta or CallMeta()
        created = utc_now()
        batch = parameters if isinstance(parameters, list) else [parameters]
        n = len(batch)
        found = list(await self._conn.execute_fetchall(
            "WITH hit (x) AS (SELECT CASE"
            " WHEN ? IS NOT NULL AND (SELECT COUNT(*) FROM generations WHERE status = ? AND caller IS ?"
            "   AND operation <> 'upload') + ? > ?"
            "   THEN 'pending'"
            " WHEN ? IS NOT NULL AND (SELECT COUNT(*) FROM generations WHERE caller IS ? AND timestamp >= ?"
            "   AND status NOT IN (?, ?)) + ? > ? THEN 'per-minute'"
            " WHEN ? IS NOT NULL AND (SELECT COUNT(*) FROM generations WHERE caller IS ? AND timestamp >= ?"
            "   AND status NOT IN (?, ?)) + ? > ? THEN 'daily'"
            " WHEN ? IS NOT NULL AND (SELECT TOTAL(cost_usd) FROM generations WHERE caller IS ? AND timestamp >= ?"
            "   AND status NOT IN (?, ?)) + ? > ? + ? THEN 'budget' END),"
            " batch (k, params) AS (SELECT key, value FROM json_each(?))"
            " INSERT INTO generations (timestamp, prompt, parameters_json, caller, owner, model, operation,"
            " parent_id, style, batch_id, status, error, cost_usd, duration_ms, attempts, finished_at)"
            " SELECT ?, ?, params, ?, ?, ?, ?, ?, ?, ?,"
            " CASE WHEN x IS NULL THEN ? WHEN x = 'budget' THEN ? ELSE ? END,"
            " CASE WHEN x = 'budget' THEN x ELSE x || ' limit' END, CASE WHEN x IS NULL THEN ? ELSE 0 END,"
            " CASE WHEN x IS NULL THEN NULL ELSE 0 END, CASE WHEN x IS NULL THEN NULL ELSE 0 END,"
            " CASE WHEN x IS NULL THEN NULL ELSE ? END FROM hit, batch ORDER BY k RETURNING *",
            (max_pending, PENDING, caller, n, max_pending,
             per_minute, caller, minute_since, RATE_LIMITED, BUDGET_EXCEEDED, n, per_minute,
             daily, caller, day_since, RATE_LIMITED, BUDGET_EXCEEDED, n, daily,
             budget_usd, caller, day_since, RATE_LIMITED, BUDGET_EXCEEDED, (meta.cost_usd or 0.0) * n, budget_usd,
             BUDGET_EPSILON,
             # Each image's parameters as a JSON text, in a JSON array of them: one fixed statement for any n.
             json.dumps([json.dumps(p, ensure_ascii=False, sort_keys=True) for p in batch]),
             created, prompt, caller, self.owner.id, meta.model, meta.operation, meta.parent_id, meta.style,
             meta.batch_id,
             PENDING, BUDGET_EXCEEDED, RATE_LIMITED, meta.cost_usd, created)))
        made = sorted((Generation.from_row(dict(row)) for row in found), key=lambda gen: gen.id)
        return Admission(made[0], refused_by(dict(found[0])), tuple(made))

    async def usage(self, caller: str | None, minute_since: str, day_since: str) -> Usage:
        found = list(await self._conn.execute_fetchall(
            "SELECT (SELECT COUNT(*) FROM generations WHERE caller IS ? AND timestamp >= ? AND status NOT IN (?, ?)),"
            " (SELECT MIN(timestamp) FROM generations WHERE caller IS ? AND timestamp >= ? AND status NOT IN (?, ?)),"
            " (SELECT COUNT(*) FROM generations WHERE caller IS ? AND timestamp >= ? AND status NOT IN (?, ?))",
            (caller, minute_since, RATE_LIMITED, BUDGET_EXCEEDED, caller, minute_since, RATE_LIMITED,
             BUDGET_EXCEEDED, caller, day_since, RATE_LIMITED, BUDGET_EXCEEDED)))
        minute, oldest, day = found[0]
        return Usage(int(minute), int(day), oldest)

    async def spend_since(self, caller: str | None, day_since: str) -> float:
        """What a caller's calls since `day_since` cost (refused calls and unknown prices count 0); the
        calls in flight count at their price, as the budget check counts them."""
        async with self._reading() as conn:
            found = list(await conn.execute_fetchall(
                "SELECT TOTAL(cost_usd) FROM generations WHERE caller IS ? AND timestamp >= ? AND status NOT IN (?, ?)",
                (caller, day_since, RATE_LIMITED, BUDGET_EXCEEDED)))
        return float(found[0][0])

    async def finish(self, gen_id: int, status: str, *, image_url: str | None = None,
                     error: str | None = None, http_status: int | None = None,
                     duration_ms: int | None = None, image: StoredImageInfo | None = None,
                     attempts: int | None = None, queue_ms: int | None = None,
                     upstream_error: str | None = None, cost_usd: float | None = None) -> Generation:
        """End a call's row. `cost_usd` None keeps the price recorded at admission (0.0: not charged);
        the request id stays, as a record of the Pixazo job."""
        # One trip to the connection's thread: the update and the finished row together.
        found = await self._conn.execute_fetchall(
            "UPDATE generations SET status = ?, image_url = ?, error = ?, http_status = ?,"
            " duration_ms = ?, finished_at = ?, image_path = ?, image_bytes = ?, image_sha256 = ?,"
            " image_mime = ?, attempts = ?, queue_ms = ?, upstream_error = ?, cost_usd = COALESCE(?, cost_usd),"
            " provenance = ? WHERE id = ? RETURNING *",
            (status, image_url, error, http_status, duration_ms, utc_now(),
             image.name if image else None, image.size if image else None,
             image.sha256 if image else None, image.mime if image else None, attempts, queue_ms,
             upstream_error, cost_usd, image.provenance if image else None, gen_id),
        )
        rows = list(found)
        if not rows:  # pragma: no cover - rows are never deleted
            raise RuntimeError(f"generation {gen_id} vanished")
        return Generation.from_row(dict(rows[0]))

    # One-time upload links (app.core.uploads holds the rules; these are the rows).

    async def add_upload_link(self, token_sha256: str, gen_id: int, caller: str | None, expires_at: float) -> None:
        await self._conn.execute("INSERT INTO upload_links (token_sha256, generation_id, caller, expires_at)"
                                 " VALUES (?, ?, ?, ?)", (token_sha256, gen_id, caller, expires_at))

    async def claim_upload_link(self, token_sha256: str, now: float) -> tuple[int, str | None] | None:
        """(generation id, caller) of a live, unused link, now marked used; None otherwise."""
        found = list(await self._conn.execute_fetchall(
            "UPDATE upload_links SET used_at = ? WHERE token_sha256 = ? AND used_at IS NULL AND expires_at > ?"
            " AND EXISTS (SELECT 1 FROM generations g WHERE g.id = upload_links.generation_id AND g.status = 'PENDING')"
            " RETURNING generation_id, caller", (now, token_sha256, now)))
        return (int(found[0][0]), found[0][1]) if found else None

    async def release_upload_link(self, token_sha256: str) -> None:
        await self._conn.execute("UPDATE upload_links SET used_at = NULL WHERE token_sha256 = ?", (token_sha256,))

    async def upload_link_live(self, token_sha256: str, now: float) -> bool:
        """Whether the link would take a file now (unused, unexpired, its row not ended), claiming nothing."""
        found = list(await self._conn.execute_fetchall(
            "SELECT 1 AS live FROM upload_links l JOIN generations g ON g.id = l.generation_id"
            " WHERE l.token_sha256 = ? AND l.used_at IS NULL AND l.expires_at > ? AND g.status = 'PENDING'",
            (token_sha256, now)))
        return bool(found)

    async def expire_upload_links(self, now: float) -> int:
        """Rows of links that expired unused end EXPIRED."""
        cur = await self._conn.execute(
            "UPDATE generations SET status = 'EXPIRED', error = 'the upload link expired unused', finished_at = ?"
            " WHERE status = ? AND operation = 'upload' AND id IN (SELECT generation_id FROM upload_links"
            " WHERE used_at IS NULL AND expires_at <= ?)", (utc_now(), PENDING, now))
        return cur.rowcount

    async def open_upload_links(self, caller: str | None) -> int:
        found = list(await self._conn.execute_fetchall(
            "SELECT COUNT(*) FROM generations WHERE status = ? AND operation = 'upload' AND caller IS ?",
            (PENDING, caller)))
        return int(found[0][0])

    async def end_pending(self, gen_id: int, status: str, error: str) -> bool:
        """End a row only if it is still PENDING (a cancellation made for another instance); whether it was."""
        cur = await self._conn.execute("UPDATE generations SET status = ?, error = ?, finished_at = ?"
                                       " WHERE id = ? AND status = ?", (status, error, utc_now(), gen_id, PENDING))
        return cur.rowcount == 1

    async def with_status(self, ids: list[int], status: str) -> list[int]:
        """Those of `ids` whose rows have this status."""
        marks = ", ".join("?" * len(ids))
        async with self._reading() as conn:
            found = await conn.execute_fetchall(
                f"SELECT id FROM generations WHERE status = ? AND id IN ({marks})", (status, *ids))  # noqa: S608
        return [int(row[0]) for row in found]

    async def wait_finished(self, gen_id: int, timeout_s: float) -> None:
        """Return once the row has left PENDING (or is gone), or after `timeout_s` (app.storage.finishes)."""
        async def still_pending() -> bool:
            gen = await self.get(gen_id)
            return gen is not None and gen.status == PENDING

        await poll_until_finished(still_pending, timeout_s)

    async def set_request_id(self, gen_id: int, request_id: str) -> None:
        """Record Pixazo's queue job id on a call in flight: from now on a restart resumes it."""
        await self._conn.execute("UPDATE generations SET request_id = ? WHERE id = ? AND status = ?",
                                 (request_id, gen_id, PENDING))

    async def children(self, gen_id: int, limit: int = 100, *, owned_by: str | None = None,
                       owned_only: bool = False) -> list[Generation]:
        """The generations made from this one (edits, regenerations), newest first.

        `owned_only` restricts to the rows of `owned_by` (None: the anonymous rows), as in page().
        """
        sql = "SELECT * FROM generations WHERE parent_id = ?"
        args: list[Any] = [gen_id]
        if owned_only:
            sql += " AND caller IS ?"
            args.append(owned_by)
        async with self._reading() as conn:
            found = await conn.execute_fetchall(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))
        return [Generation.from_row(dict(r)) for r in found]

    async def get(self, gen_id: int) -> Generation | None:
        async with self._reading() as conn, conn.execute("SELECT * FROM generations WHERE id = ?",
                                                         (gen_id,)) as cur:
            row = await cur.fetchone()
        return Generation.from_row(dict(row)) if row is not None else None

    async def page(self, *, limit: int = 20, status: str | None = None, query: str | None = None,
                   before_id: int | None = None, caller: str | None = None, owned_by: str | None = None,
                   owned_only: bool = False) -> list[Generation]:
        """Newest first. A query uses the FTS index in rowid order, so it stays fast on large tables.

        `caller` is a filter a caller chose; `owned_only` restricts to the rows of `owned_by` (None:
        the anonymous rows), whatever else is asked.
        """
        where: list[str] = []
        args: list[Any] = []
        if query is not None and (match := fts_query(query)) is not None:
            sql = "SELECT g.* FROM generations_fts f JOIN generations g ON g.id = f.rowid"
            where.append("generations_fts MATCH ?")
            args.append(match)
            id_col = "f.rowid"
        else:
            sql = "SELECT g.* FROM generations g"
            id_col = "g.id"
        if status is not None:
            where.append("g.status = ?")
            args.append(status)
        if caller is not None:
            where.append("g.caller = ?")
            args.append(caller)
        if owned_only and owned_by is None:
            where.append("g.caller IS NULL")
        elif owned_only:
            where.append("g.caller = ?")
            args.append(owned_by)
        if before_id is not None:
            where.append(f"{id_col} < ?")
            args.append(before_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {id_col} DESC LIMIT ?"
        args.append(limit)
        async with self._reading() as conn, conn.execute(sql, args) as cur:
            found = await cur.fetchall()
        return [Generation.from_row(dict(r)) for r in found]

    async def count_since(self, caller: str | None, since: str, exclude_status: str) -> int:
        """Calls by one caller since an ISO timestamp (for daily limits after a restart)."""
        async with self._reading() as conn, conn.execute(
            "SELECT COUNT(*) FROM generations WHERE caller IS ? AND timestamp >= ? AND status != ?",
            (caller, since, exclude_status),
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def facets(self, owner: str | None = None, *, owned_only: bool = False) -> tuple[list[str], list[str]]:
        """The callers and statuses present, for the gallery's filters (`owned_only`: the owner's rows only)."""
        if owned_only:
            async with self._reading() as conn:
                found = await conn.execute_fetchall(
                    "SELECT DISTINCT status FROM generations WHERE caller IS ? ORDER BY status LIMIT 100", (owner,))
            return ([owner] if owner is not None else []), [str(row[0]) for row in found]
        return await self._distinct("caller", 200), await self._distinct("status", 100)

    async def _distinct(self, column: str, limit: int) -> list[str]:
        """Distinct values of an indexed column, in order, by hopping from one to the next through its
        index: a few lookups per value instead of a scan of the whole table (SELECT DISTINCT)."""
        if column not in ("caller", "status"):  # the two columns with an index that leads with them
            raise ValueError(column)
        async with self._reading() as conn:
            found = await conn.execute_fetchall(
                f"WITH RECURSIVE v(x) AS (SELECT (SELECT MIN({column}) FROM generations WHERE {column} IS NOT NULL)"  # noqa: S608 - column from a fixed list
                f" UNION ALL SELECT (SELECT MIN({column}) FROM generations WHERE {column} > x) FROM v"
                f" WHERE x IS NOT NULL LIMIT ?) SELECT x FROM v WHERE x IS NOT NULL", (limit + 1,))
        return [row[0] for row in found][:limit]

    # Gallery sessions (app.identity.sessions holds the rules; these are the rows).

    async def add_session(self, id_hash: str, caller: str, expires_at: str) -> None:
        """Record a session; sessions past their expiry are swept out at the same time."""
        now = utc_now()
        await self._conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
        await self._conn.execute(
            "INSERT INTO sessions (id_hash, caller, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (id_hash, caller, now, expires_at))

    async def session_caller(self, id_hash: str) -> str | None:
        """The caller of a live session, or None when it was ended or has expired."""
        async with self._reading() as conn:
            found = list(await conn.execute_fetchall(
                "SELECT caller FROM sessions WHERE id_hash = ? AND expires_at > ?", (id_hash, utc_now())))
        return str(found[0][0]) if found else None

    async def end_session(self, id_hash: str) -> None:
        await self._conn.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,))

    async def server_key(self, name: str) -> bytes:
        """A random 32-byte key under `name`, made by whichever process asks first and then shared."""
        await self._conn.execute("INSERT INTO server_keys (name, value, created_at) VALUES (?, ?, ?)"
                                 " ON CONFLICT (name) DO NOTHING", (name, secrets.token_hex(32), utc_now()))
        found = list(await self._conn.execute_fetchall("SELECT value FROM server_keys WHERE name = ?", (name,)))
        return bytes.fromhex(str(found[0][0]))
