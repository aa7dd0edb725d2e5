"""The SQLite store on a real file: pragmas, schema version, pending rows left by a crash."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.settings import Settings
from app.storage.records import SCHEMA_VERSION, GenerationStore


async def test_a_new_database_is_created_with_wal_and_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "pixazo.db"
    store = await GenerationStore.open(path)
    try:
        assert await store.schema_version() == SCHEMA_VERSION
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = {r[1] for r in conn.execute("PRAGMA table_info(generations)")}
    assert {"id", "timestamp", "prompt", "parameters_json", "image_url", "status"} <= columns


async def test_rows_left_pending_become_interrupted_and_finished_rows_stay(tmp_path: Path) -> None:
    path = tmp_path / "pixazo.db"
    store = await GenerationStore.open(path)
    pending = await store.insert_pending("left behind", {"seed": 1})
    done = await store.insert_pending("finished", {"seed": 2})
    await store.finish(done.id, "SUCCESS", image_url="https://x.r2.dev/a.png")
    await store.close()

    store = await GenerationStore.open(path)
    try:
        assert await store.mark_interrupted() == 1
        left = await store.get(pending.id)
        kept = await store.get(done.id)
    finally:
        await store.close()
    assert left is not None
    assert left.status == "INTERRUPTED"
    assert kept is not None
    assert kept.status == "SUCCESS"


async def test_reopening_does_not_migrate_twice(tmp_path: Path) -> None:
    path = tmp_path / "pixazo.db"
    for _ in range(2):
        store = await GenerationStore.open(path)
        await store.insert_pending("p", {})
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 2


def test_secrets_can_come_from_a_directory_of_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "PIXAZO_API_KEY").write_text("key-from-a-secret-file")
    (tmp_path / "PIXAZO_AUTH_TOKENS").write_text("alice:token-from-a-secret-file")
    monkeypatch.setenv("PIXAZO_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("PIXAZO_API_KEY", raising=False)
    monkeypatch.delenv("PIXAZO_AUTH_TOKENS", raising=False)
    settings = Settings.load(_env_file=None)
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "key-from-a-secret-file"
    assert settings.auth_tokens is not None
    assert settings.auth_tokens.get_secret_value() == "alice:token-from-a-secret-file"
    assert "key-from-a-secret-file" not in repr(settings)


async def test_facets_list_each_caller_and_status_once_in_order(tmp_path: Path) -> None:
    store = await GenerationStore.open(tmp_path / "pixazo.db")
    try:
        for caller, status in [("bob", "SUCCESS"), (None, "HTTP_500"), ("alice", "SUCCESS"), ("bob", "TIMEOUT"),
                               (None, "SUCCESS")]:
            row = await store.insert_pending("p", {}, caller)
            await store.finish(row.id, status)
        assert await store.facets() == (["alice", "bob"], ["HTTP_500", "SUCCESS", "TIMEOUT"])
    finally:
        await store.close()
