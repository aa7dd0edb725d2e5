"""`pixazo-mcp migrate`: a real SQLite history copied to a real PostgreSQL, ids kept, resumable, verified."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from app.ops.migrate import MigrateError, copy_images, migrate_rows
from app.storage.blobs import LocalBlobStore
from app.storage.rows import Instance
from tests.conftest import store_for


async def sqlite_history(path: Path, rows: int) -> list[int]:
    store = await store_for(f"sqlite:///{path}")
    ids = []
    try:
        for i in range(rows):
            row = await store.insert_pending(f"old picture {i} of a lighthouse" if i % 3 == 0 else f"picture {i}",
                                             {"seed": i}, "alice" if i % 2 else None)
            await store.finish(row.id, "SUCCESS" if i % 5 else "HTTP_500", image_url=f"https://x.r2.dev/{i}.png",
                               duration_ms=i, attempts=1)
            ids.append(row.id)
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:  # a gap in the ids, as deletions by hand would leave
        conn.execute("DELETE FROM generations WHERE id = 7")
    conn.close()
    return [i for i in ids if i != 7]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", "migrate", *args], capture_output=True, text=True,
                          timeout=120, check=False)


async def test_migrate_copies_every_row_with_its_id_and_new_rows_follow(tmp_path: Path, postgres_url: str) -> None:
    source = f"sqlite:///{tmp_path / 'old.db'}"
    ids = await sqlite_history(tmp_path / "old.db", 25)

    done = await asyncio.to_thread(run_cli, "--from", source, "--to", postgres_url)
    assert done.returncode == 0, done.stderr
    assert "copied 24 generations (0 were already there)" in done.stdout

    store = await store_for(postgres_url)
    try:
        copied = await store.page(limit=100)
        assert [g.id for g in copied] == sorted(ids, reverse=True)
        first = await store.get(1)
        assert first is not None
        assert (first.prompt, first.parameters, first.status, first.caller, first.duration_ms) == (
            "old picture 0 of a lighthouse", {"seed": 0}, "HTTP_500", None, 0)
        assert [g.id for g in await store.page(query="lighth")] == [25, 22, 19, 16, 13, 10, 4, 1]
        new = await store.insert_pending("after the move", {})
        assert new.id == 26  # the sequence continues after the copied ids
    finally:
        await store.close()

    again = await asyncio.to_thread(run_cli, "--from", source, "--to", postgres_url)  # idempotent: nothing copied twice
    assert again.returncode == 0, again.stderr
    assert "copied 0 generations (24 were already there)" in again.stdout


async def test_an_interrupted_migration_continues_where_it_stopped(tmp_path: Path, postgres_url: str) -> None:
    path = tmp_path / "old.db"
    await sqlite_history(path, 30)
    source = f"sqlite:///{path}"
    # The first run stops after its second batch has committed (as if the process were killed).
    seen: list[int] = []

    class Stopped(Exception):
        pass

    def stop_after_two_batches(done: int, total: int) -> None:
        seen.append(done)
        if len(seen) == 2:
            raise Stopped

    with pytest.raises(Stopped):
        await asyncio.to_thread(migrate_rows, source, postgres_url, batch=8, progress=stop_after_two_batches)
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM generations").fetchone() == (16,)

    report = await asyncio.to_thread(migrate_rows, source, postgres_url, batch=8)
    assert (report.already_there, report.copied, report.source_rows, report.verified) == (16, 13, 29, True)
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM generations").fetchone() == (29, 29)


async def test_a_target_with_other_rows_under_the_same_ids_fails_verification(
        tmp_path: Path, postgres_url: str) -> None:
    path = tmp_path / "old.db"
    await sqlite_history(path, 5)
    other = await store_for(postgres_url, Instance())
    try:
        for i in range(3):
            await other.insert_pending(f"a row that was never in the source {i}", {})
    finally:
        await other.close()
    with pytest.raises(MigrateError, match="verification failed"):
        await asyncio.to_thread(migrate_rows, f"sqlite:///{path}", postgres_url)


def test_migrate_refuses_what_it_cannot_copy_and_never_prints_the_password(tmp_path: Path) -> None:
    missing = run_cli("--from", f"sqlite:///{tmp_path / 'none.db'}", "--to",
                      "postgresql://pixazo:s3cret-db-pass@127.0.0.1:9/pixazo")
    assert missing.returncode == 1
    assert "no database at" in missing.stderr
    (tmp_path / "real.db").touch()
    unreachable = run_cli("--from", f"sqlite:///{tmp_path / 'real.db'}", "--to",
                          "postgresql://pixazo:s3cret-db-pass@127.0.0.1:9/pixazo")
    assert unreachable.returncode == 1
    assert "postgresql://pixazo:***@127.0.0.1:9/pixazo" in unreachable.stderr
    for out in (missing, unreachable):
        assert "s3cret-db-pass" not in out.stdout + out.stderr


async def test_copy_images_streams_each_image_checks_its_hash_and_skips_those_already_there(tmp_path: Path) -> None:
    source, target = LocalBlobStore(tmp_path / "from"), LocalBlobStore(tmp_path / "to")
    good, bad = b"\x89PNG good image" * 1000, b"\x89PNG bytes that changed"

    async def one(data: bytes) -> AsyncIterator[bytes]:
        yield data

    await source.put("1-0123456789abcdef.png", one(good))
    await source.put("2-0123456789abcdef.png", one(bad))
    images = [("1-0123456789abcdef.png", hashlib.sha256(good).hexdigest(), len(good)),
              ("2-0123456789abcdef.png", hashlib.sha256(b"what the row recorded").hexdigest(), len(bad)),
              ("3-0123456789abcdef.png", "0" * 64, 10)]
    report = await copy_images(images, source, target)
    assert (report.copied, report.already_there) == (1, 0)
    assert report.mismatched == ["2-0123456789abcdef.png"]
    assert report.missing == ["3-0123456789abcdef.png"]
    assert await target.get("1-0123456789abcdef.png") == good
    assert await target.size("2-0123456789abcdef.png") is None  # a copy that differs is not kept
    again = await copy_images(images[:1], source, target)
    assert (again.copied, again.already_there) == (0, 1)
