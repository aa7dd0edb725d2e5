"""The record store's interface, and the choice of engine from PIXAZO_DATABASE_URL (SQLite or PostgreSQL).

The use cases see only `RecordStore`; `open_store` picks the implementation once, in the lifespan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from app.storage.oauth_records import OAuthRecords
from app.storage.records import Generation, StoredImageInfo
from app.storage.rows import Admission, CallMeta, Instance, Usage


class RecordStore(Protocol):
    """Everything the use cases and the web layer ask of the database."""

    engine: str  # "sqlite" or "postgresql"

    async def close(self) -> None: ...
    async def ping(self) -> bool: ...
    async def write_problem(self, timeout_s: float = ...) -> str | None: ...
    def oauth(self) -> OAuthRecords: ...
    async def schema_version(self) -> int: ...

    async def insert_pending(self, prompt: str, parameters: dict[str, Any], caller: str | None = None,
                             status: str = ..., *, meta: CallMeta | None = None) -> Generation: ...
    async def insert_admitted(self, prompt: str, parameters: dict[str, Any] | list[dict[str, Any]],
                              caller: str | None, *,
                              per_minute: int | None, daily: int | None, minute_since: str,
                              day_since: str, meta: CallMeta | None = None,
                              budget_usd: float | None = None, max_pending: int | None = None) -> Admission: ...
    async def usage(self, caller: str | None, minute_since: str, day_since: str) -> Usage: ...
    async def spend_since(self, caller: str | None, day_since: str) -> float: ...
    async def finish(self, gen_id: int, status: str, *, image_url: str | None = None,
                     error: str | None = None, http_status: int | None = None,
                     duration_ms: int | None = None, image: StoredImageInfo | None = None,
                     attempts: int | None = None, queue_ms: int | None = None,
                     upstream_error: str | None = None, cost_usd: float | None = None) -> Generation: ...
    async def set_request_id(self, gen_id: int, request_id: str) -> None: ...
    async def end_pending(self, gen_id: int, status: str, error: str) -> bool: ...

    # One-time upload links (app.core.uploads).
    async def add_upload_link(self, token_sha256: str, gen_id: int, caller: str | None, expires_at: float) -> None: ...
    async def claim_upload_link(self, token_sha256: str, now: float) -> tuple[int, str | None] | None: ...
    async def release_upload_link(self, token_sha256: str) -> None: ...
    async def upload_link_live(self, token_sha256: str, now: float) -> bool: ...
    async def expire_upload_links(self, now: float) -> int: ...
    async def open_upload_links(self, caller: str | None) -> int: ...
    async def with_status(self, ids: list[int], status: str) -> list[int]: ...
    async def wait_finished(self, gen_id: int, timeout_s: float) -> None: ...
    async def children(self, gen_id: int, limit: int = 100, *, owned_by: str | None = None,
                       owned_only: bool = False) -> list[Generation]: ...
    async def get(self, gen_id: int) -> Generation | None: ...
    async def page(self, *, limit: int = 20, status: str | None = None, query: str | None = None,
                   before_id: int | None = None, caller: str | None = None, owned_by: str | None = None,
                   owned_only: bool = False) -> list[Generation]: ...
    async def count_since(self, caller: str | None, since: str, exclude_status: str) -> int: ...
    async def facets(self, owner: str | None = None, *, owned_only: bool = False) -> tuple[list[str], list[str]]: ...

    # Ownership of calls in flight (app.core.leases drives these).
    async def renew_lease(self, lease_s: float) -> None: ...
    async def reap_lapsed(self, dead: list[str]) -> int: ...
    async def claim_jobs(self, dead: list[str]) -> list[Generation]: ...
    async def same_host_instances(self) -> list[tuple[str, int]]: ...
    async def release(self) -> int: ...

    # Gallery sessions (app.identity.sessions): rows keyed by a hash of the session id.
    async def add_session(self, id_hash: str, caller: str, expires_at: str) -> None: ...
    async def session_caller(self, id_hash: str) -> str | None: ...
    async def end_session(self, id_hash: str) -> None: ...

    # Random keys shared by every process on the database (the signed-link key).
    async def server_key(self, name: str) -> bytes: ...


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative/path` or `sqlite:////absolute/path` (SQLAlchemy's form)."""
    return Path(url.removeprefix("sqlite:///"))


def engine_of(url: str) -> str:
    if url.startswith("sqlite:///"):
        return "sqlite"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    raise ValueError("PIXAZO_DATABASE_URL must start with sqlite:/// or postgresql://")


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def password_of(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


async def open_store(url: str, instance: Instance | None = None, *, pool_size: int = 10) -> RecordStore:
    """The store for a database URL, migrated to the current schema."""
    instance = instance or Instance()
    if engine_of(url) == "postgresql":
        from app.storage.postgres import PostgresStore  # psycopg loads only when PostgreSQL is used

        return await PostgresStore.open(url, instance, pool_size=pool_size)
    from app.storage.records import GenerationStore

    return await GenerationStore.open(sqlite_path(url), owner=instance)
