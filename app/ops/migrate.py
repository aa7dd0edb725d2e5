"""`pixazo-mcp migrate`: copy a SQLite history to PostgreSQL, keeping ids; resumable, then verified.

Rows go over in id order, in batches that each commit, with `ON CONFLICT (id) DO NOTHING`: a rerun
after an interruption continues after the last batch that landed, and a rerun after success copies
nothing. Verification compares, for every source id, the row's identity (id, time, prompt, status)
on both sides, so a target that already held other rows under the same ids is caught, not merged.
Images are a separate step (`copy_images`): it takes any two blob stores and checks each image's hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from app.errors import BlobNotFoundError
from app.storage.blobs import BlobStore
from app.storage.database import engine_of, open_store, redacted, sqlite_path

BATCH = 2000
# The columns that say which row a row is; compared between source and target after the copy.
IDENTITY = ("id", "timestamp", "prompt", "status")


class MigrateError(RuntimeError):
    """The copy cannot start or did not verify; the message says why (never with a password)."""


@dataclass
class MigrateReport:
    source_rows: int = 0
    copied: int = 0
    already_there: int = 0
    verified: bool = False
    images: ImageReport | None = None


@dataclass
class ImageReport:
    copied: int = 0
    already_there: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    verified: int = 0  # read back from the target with the row's hash


async def _ensure_schema(url: str) -> None:
    """Open once with the server's own code: the source is brought to the current schema, the target
    gets it (under the migration lock, so a replica starting meanwhile is fine)."""
    store = await open_store(url)
    await store.close()


def _columns_sqlite(conn: sqlite3.Connection) -> list[str]:
    return [str(r[1]) for r in conn.execute("PRAGMA table_info(generations)")]


def _columns_pg(conn: psycopg.Connection[Any]) -> list[str]:
    cur = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                       " AND table_name = 'generations' AND column_name != 'prompt_tsv' ORDER BY ordinal_position")
    return [str(r[0]) for r in cur.fetchall()]


def _digest(rows: Iterable[tuple[Any, ...]]) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    for row in rows:
        digest.update(repr(tuple(row)).encode())
        count += 1
    return count, digest.hexdigest()


def migrate_rows(source: str, target: str, *, batch: int = BATCH,
                 progress: Callable[[int, int], None] | None = None) -> MigrateReport:
    """Copy every generation of `source` (sqlite:///PATH) into `target` (postgresql://...), with its id."""
    if engine_of(source) != "sqlite" or engine_of(target) != "postgresql":
        raise MigrateError("migrate copies from sqlite:///PATH to postgresql://...")
    path = sqlite_path(source)
    if not path.exists():
        raise MigrateError(f"no database at {path}")
    try:
        psycopg.connect(target, connect_timeout=10).close()  # fail fast, before the pool's patient retries
        asyncio.run(_ensure_schema(source))
        asyncio.run(_ensure_schema(target))
    except psycopg.Error as exc:
        raise MigrateError(f"cannot open {redacted(target)}: {type(exc).__name__}") from None
    report = MigrateReport()
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        # Autocommit: each batch is its own transaction, so an interruption keeps the batches before it.
        with psycopg.connect(target, autocommit=True) as dst:
            columns = [c for c in _columns_sqlite(src) if c in set(_columns_pg(dst))]
            names = ", ".join(columns)
            report.source_rows = int(src.execute("SELECT COUNT(*) FROM generations").fetchone()[0])
            source_max = int(src.execute("SELECT COALESCE(MAX(id), 0) FROM generations").fetchone()[0])
            # Batches commit in id order: everything up to the highest copied id is there already.
            row = dst.execute("SELECT COALESCE(MAX(id), 0) FROM generations WHERE id <= %s", (source_max,)).fetchone()
            after = int(row[0]) if row else 0
            report.already_there = int(src.execute("SELECT COUNT(*) FROM generations WHERE id <= ?",
                                                   (after,)).fetchone()[0])
            insert = (f"INSERT INTO generations ({names}) VALUES ({', '.join(['%s'] * len(columns))})"  # noqa: S608 - column names from both catalogues
                      " ON CONFLICT (id) DO NOTHING").encode()
            while True:
                chunk = src.execute(f"SELECT {names} FROM generations WHERE id > ? ORDER BY id LIMIT ?",  # noqa: S608 - column names from the catalogue
                                    (after, batch)).fetchall()
                if not chunk:
                    break
                with dst.transaction(), dst.cursor() as cur:
                    cur.executemany(insert, chunk)
                report.copied += len(chunk)
                after = int(chunk[-1][0])
                if progress is not None:
                    progress(report.already_there + report.copied, report.source_rows)
            # New rows written on PostgreSQL must get ids after the copied ones.
            dst.execute("SELECT setval(pg_get_serial_sequence('generations', 'id'),"
                        " GREATEST((SELECT MAX(id) FROM generations), 1))")
            identity = ", ".join(IDENTITY)
            src_count, src_hash = _digest(src.execute(f"SELECT {identity} FROM generations ORDER BY id"))  # noqa: S608 - fixed column list
            # A server-side cursor (inside a transaction): a million rows stream instead of loading at once.
            with dst.transaction(), dst.cursor(name="verify") as cur:
                cur.execute(f"SELECT {identity} FROM generations WHERE id <= %s ORDER BY id".encode(),  # noqa: S608
                            (source_max,))
                dst_count, dst_hash = _digest(cur)
    except psycopg.Error as exc:
        raise MigrateError(f"copy to {redacted(target)} failed: {type(exc).__name__}: "
                           f"{(exc.diag.message_primary or '')[:200]}") from None
    finally:
        src.close()
    if (src_count, src_hash) != (dst_count, dst_hash):
        raise MigrateError(f"verification failed: {src_count} rows in the source, {dst_count} with those ids in "
                           "the target, and they differ (did the target already hold other rows?)")
    report.verified = True
    return report


async def copy_images(images: Iterable[tuple[str, str | None, int | None]], source: BlobStore,
                      target: BlobStore) -> ImageReport:
    """Copy stored images (key, sha256, size) from one blob store to another (a local directory to S3,
    say), streaming; skips those already there with the right size; checks every copied image's hash
    against the row's. The `--images-to` option of `pixazo-mcp migrate` runs this after the rows."""
    report = ImageReport()
    for key, sha256, size in images:
        if size is not None and await target.size(key) == size:
            report.already_there += 1
            continue
        digest = hashlib.sha256()

        async def hashed(key: str = key, digest: Any = digest) -> AsyncIterator[bytes]:
            async for chunk in source.stream(key):
                digest.update(chunk)
                yield chunk

        try:
            await target.put(key, hashed())
        except BlobNotFoundError:
            report.missing.append(key)
            continue
        if sha256 is not None and digest.hexdigest() != sha256:
            await target.delete(key)  # never leave a copy that differs from what the row promises
            report.mismatched.append(key)
        else:
            report.copied += 1
    return report


def image_rows(source: str) -> list[tuple[str, str | None, int | None]]:
    """The stored images a SQLite history refers to: (key, sha256, size)."""
    conn = sqlite3.connect(f"file:{sqlite_path(source)}?mode=ro", uri=True, timeout=30)
    try:
        return [(str(r[0]), r[1], r[2]) for r in conn.execute(
            "SELECT image_path, image_sha256, image_bytes FROM generations WHERE image_path IS NOT NULL ORDER BY id")]
    finally:
        conn.close()


async def verify_images(images: Iterable[tuple[str, str | None, int | None]], target: BlobStore,
                        report: ImageReport) -> None:
    """Read every image back from the target and check it against its row's hash: a copy skipped
    because it was already there (an earlier run) is checked as hard as a fresh one."""
    failed = set(report.missing) | set(report.mismatched)
    for key, sha256, _ in images:
        if key in failed:
            continue
        digest = hashlib.sha256()
        try:
            async for chunk in target.stream(key):
                digest.update(chunk)
        except BlobNotFoundError:
            report.missing.append(key)
            continue
        if sha256 is not None and digest.hexdigest() != sha256:
            report.mismatched.append(key)
        else:
            report.verified += 1


async def migrate_images(source: str, images_from: BlobStore, images_to: BlobStore) -> ImageReport:
    """`--images-to`: copy the images a SQLite history refers to, then verify every one in the target.
    Resumable: a rerun skips what is there already (each object appears whole or not at all)."""
    images = await asyncio.to_thread(image_rows, source)
    report = await copy_images(images, images_from, images_to)
    await verify_images(images, images_to, report)
    return report
