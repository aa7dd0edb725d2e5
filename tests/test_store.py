"""The record store on both engines (a real SQLite file, a real PostgreSQL database): one suite, one behaviour."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from app.settings import Settings
from app.storage import postgres
from app.storage.database import engine_of, redacted
from app.storage.records import SCHEMA_VERSION, GenerationStore
from app.storage.rows import Instance
from tests.conftest import store_for

MINUTE_AGO = "2000-01-01T00:00:00.000Z"


def test_both_engines_have_the_same_migration_history() -> None:
    assert postgres.SCHEMA_VERSION == SCHEMA_VERSION


async def test_a_new_sqlite_database_is_created_with_wal_and_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "pixazo.db"
    store = await GenerationStore.open(path)
    try:
        assert await store.schema_version() == SCHEMA_VERSION
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = {r[1] for r in conn.execute("PRAGMA table_info(generations)")}
    assert {"id", "timestamp", "prompt", "parameters_json", "image_url", "status", "owner"} <= columns


async def test_a_new_database_gets_the_current_schema(database_url: str) -> None:
    store = await store_for(database_url)
    try:
        assert store.engine == engine_of(database_url)
        assert await store.schema_version() == SCHEMA_VERSION
        assert await store.ping()
    finally:
        await store.close()


async def test_rows_of_a_lapsed_owner_become_interrupted_and_finished_rows_stay(database_url: str) -> None:
    crashed = await store_for(database_url)  # never renews a lease: as if it died right away
    pending = await crashed.insert_pending("left behind", {"seed": 1})
    done = await crashed.insert_pending("finished", {"seed": 2})
    await crashed.finish(done.id, "SUCCESS", image_url="https://x.r2.dev/a.png")
    await crashed.close()

    store = await store_for(database_url)
    try:
        await store.renew_lease(30)
        assert await store.reap_lapsed([]) == 1
        assert await store.reap_lapsed([]) == 0
        left = await store.get(pending.id)
        kept = await store.get(done.id)
    finally:
        await store.close()
    assert left is not None
    assert (left.status, left.error) == ("INTERRUPTED", "the server stopped before this call finished")
    assert kept is not None
    assert kept.status == "SUCCESS"


async def test_a_live_owners_rows_are_never_touched_and_a_dead_ones_are(database_url: str) -> None:
    first, second = await store_for(database_url), await store_for(database_url)
    try:
        await first.renew_lease(30)
        await second.renew_lease(30)
        mine = await first.insert_pending("first's call in flight", {})
        theirs = await second.insert_pending("second's call in flight", {})
        assert await second.reap_lapsed([]) == 0
        assert await first.reap_lapsed([]) == 0
        assert (await second.get(mine.id)).status == "PENDING"  # type: ignore[union-attr]
        # The first process is known to be gone (same host, its pid no longer runs): no need to wait.
        assert await second.reap_lapsed([first.owner.id]) == 1  # type: ignore[attr-defined]
        assert (await second.get(mine.id)).status == "INTERRUPTED"  # type: ignore[union-attr]
        assert (await second.get(theirs.id)).status == "PENDING"  # type: ignore[union-attr]
    finally:
        await first.close()
        await second.close()


async def test_a_lease_that_is_not_renewed_lapses(database_url: str) -> None:
    short, watcher = await store_for(database_url), await store_for(database_url)
    try:
        await short.renew_lease(0.3)
        row = await short.insert_pending("short lease", {})
        assert await watcher.reap_lapsed([]) == 0
        await asyncio.sleep(0.5)
        assert await watcher.reap_lapsed([]) == 1
        assert (await watcher.get(row.id)).status == "INTERRUPTED"  # type: ignore[union-attr]
        assert await watcher.same_host_instances() == []  # the lapsed instance is forgotten
    finally:
        await short.close()
        await watcher.close()


async def test_release_ends_only_the_own_rows(database_url: str) -> None:
    first, second = await store_for(database_url), await store_for(database_url)
    try:
        for store in (first, second):
            await store.renew_lease(30)
        mine = await first.insert_pending("mine", {})
        theirs = await second.insert_pending("theirs", {})
        assert await first.release() == 1
        assert (await second.get(mine.id)).status == "INTERRUPTED"  # type: ignore[union-attr]
        assert (await second.get(theirs.id)).status == "PENDING"  # type: ignore[union-attr]
        assert [i for i, _ in await second.same_host_instances()] == []
    finally:
        await first.close()
        await second.close()


async def test_reopening_does_not_migrate_twice(database_url: str) -> None:
    for _ in range(2):
        store = await store_for(database_url)
        await store.insert_pending("p", {})
        await store.close()
    store = await store_for(database_url)
    try:
        assert len(await store.page(limit=10)) == 2
    finally:
        await store.close()


async def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    stores = await asyncio.gather(*(store_for(postgres_url) for _ in range(4)))
    try:
        import psycopg

        async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
            cur = await conn.execute("SELECT version FROM schema_migrations ORDER BY version")
            assert [r[0] for r in await cur.fetchall()] == list(range(1, SCHEMA_VERSION + 1))
    finally:
        for store in stores:
            await store.close()


def test_secrets_can_come_from_a_directory_of_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "PIXAZO_API_KEY").write_text("key-from-a-secret-file")
    (tmp_path / "PIXAZO_AUTH_TOKENS").write_text("alice:token-from-a-secret-file")
    (tmp_path / "PIXAZO_DATABASE_URL").write_text("postgresql://pixazo:db-password-in-a-file@db:5432/pixazo")
    monkeypatch.setenv("PIXAZO_SECRETS_DIR", str(tmp_path))
    for name in ("PIXAZO_API_KEY", "PIXAZO_AUTH_TOKENS", "PIXAZO_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.load(_env_file=None)
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "key-from-a-secret-file"
    assert settings.auth_tokens is not None
    assert settings.auth_tokens.get_secret_value() == "alice:token-from-a-secret-file"
    assert settings.database == "postgresql://pixazo:db-password-in-a-file@db:5432/pixazo"
    assert settings.uses_postgres
    assert "key-from-a-secret-file" not in repr(settings)
    assert "db-password-in-a-file" not in repr(settings)
    assert redacted(settings.database) == "postgresql://pixazo:***@db:5432/pixazo"


def test_the_default_database_is_the_sqlite_file(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, db_path=tmp_path / "x.db")  # type: ignore[call-arg]
    assert settings.database == f"sqlite:///{tmp_path}/x.db"
    assert not settings.uses_postgres
    assert not settings.legacy_stateless


async def test_facets_list_each_caller_and_status_once_in_order(database_url: str) -> None:
    store = await store_for(database_url)
    try:
        for caller, status in [("bob", "SUCCESS"), (None, "HTTP_500"), ("alice", "SUCCESS"), ("bob", "TIMEOUT"),
                               (None, "SUCCESS")]:
            row = await store.insert_pending("p", {}, caller)
            await store.finish(row.id, status)
        assert await store.facets() == (["alice", "bob"], ["HTTP_500", "SUCCESS", "TIMEOUT"])
    finally:
        await store.close()


async def test_search_requires_every_word_as_a_prefix(database_url: str) -> None:
    store = await store_for(database_url)
    try:
        for prompt in ["a red fox in snow", "a blue whale", "foxes at dawn", "Red barn", "Ünïcode Straße #765432"]:
            await store.insert_pending(prompt, {"seed": 1})

        async def search(query: str, **extra: object) -> list[str]:
            return [g.prompt for g in await store.page(query=query, **extra)]  # type: ignore[arg-type]

        assert await search("fox") == ["foxes at dawn", "a red fox in snow"]
        assert await search("RED") == ["Red barn", "a red fox in snow"]
        assert await search("red fox") == ["a red fox in snow"]
        assert await search("fox", limit=1, before_id=3) == ["a red fox in snow"]
        assert await search("red whale") == []
        assert await search("straße 7654") == ["Ünïcode Straße #765432"]
        assert await search("ünï") == ["Ünïcode Straße #765432"]
        assert await search('" OR 1=1 --') == []  # search syntax from callers is neutralised
        assert await search("'):* | !fox & (") == ["foxes at dawn", "a red fox in snow"]
        assert await search("giraffe") == []
        assert len(await search("")) == 5  # no words: no filter
    finally:
        await store.close()


async def test_page_filters_and_pages_newest_first(database_url: str) -> None:
    store = await store_for(database_url)
    try:
        for i in range(6):
            row = await store.insert_pending(f"picture {i}", {"i": i}, "alice" if i % 2 else "bob")
            await store.finish(row.id, "SUCCESS" if i != 3 else "HTTP_500", attempts=1, duration_ms=5)
        assert [g.id for g in await store.page(limit=2)] == [6, 5]
        assert [g.id for g in await store.page(limit=2, before_id=5)] == [4, 3]
        assert [g.id for g in await store.page(caller="alice")] == [6, 4, 2]
        (failed,) = await store.page(status="HTTP_500")
        assert (failed.prompt, failed.parameters, failed.caller, failed.attempts) == ("picture 3", {"i": 3},
                                                                                      "alice", 1)
        assert await store.count_since("alice", MINUTE_AGO, "RATE_LIMITED") == 3
        assert await store.count_since(None, MINUTE_AGO, "RATE_LIMITED") == 0
    finally:
        await store.close()


async def test_replicas_admit_exactly_the_allowance_together(database_url: str) -> None:
    """Three stores (as three replicas would) admit one caller's calls at once: exactly the allowance."""
    stores = [await store_for(database_url) for _ in range(3)]
    try:
        async def one(i: int) -> str | None:
            admission = await stores[i % 3].insert_admitted(
                f"call {i}", {}, "alice", per_minute=7, daily=None, minute_since=MINUTE_AGO, day_since=MINUTE_AGO)
            return admission.refused_by

        outcomes = await asyncio.gather(*(one(i) for i in range(30)))
        assert outcomes.count(None) == 7
        assert set(outcomes) == {None, "per-minute"}
        other = await stores[0].insert_admitted("bob's", {}, "bob", per_minute=7, daily=None,
                                                minute_since=MINUTE_AGO, day_since=MINUTE_AGO)
        assert other.refused_by is None  # one caller never uses up another's allowance
        usage = await stores[1].usage("alice", MINUTE_AGO, MINUTE_AGO)
        assert (usage.minute, usage.day) == (7, 7)
        refused = (await stores[2].page(status="RATE_LIMITED"))[0]
        assert (refused.error, refused.attempts, refused.duration_ms) == ("per-minute limit", 0, 0)
        assert refused.finished_at is not None
        daily = await stores[0].insert_admitted("x", {}, "alice", per_minute=None, daily=7,
                                                minute_since=MINUTE_AGO, day_since=MINUTE_AGO)
        assert daily.refused_by == "daily"
    finally:
        for store in stores:
            await store.close()


async def test_an_instance_id_is_recorded_as_the_owner(database_url: str) -> None:
    me = Instance()
    store = await store_for(database_url, me)
    try:
        await store.renew_lease(30)
        assert [i for i, _ in await store.same_host_instances()] == []
        other = await store_for(database_url)
        try:
            await other.renew_lease(30)
            assert await other.same_host_instances() == [(me.id, me.pid)]
        finally:
            await other.close()
    finally:
        await store.close()


async def test_owned_only_restricts_to_one_callers_rows_whatever_else_is_asked(database_url: str) -> None:
    store = await store_for(database_url)
    try:
        for caller in ["alice", None, "bob", "alice", None]:
            await store.insert_pending(f"a fox for {caller}", {}, caller)
        assert [g.id for g in await store.page(owned_by="alice", owned_only=True)] == [4, 1]
        assert [g.id for g in await store.page(owned_by=None, owned_only=True)] == [5, 2]
        assert await store.page(owned_by="alice", owned_only=True, caller="bob") == []
        assert [g.id for g in await store.page(owned_by="bob", owned_only=True, query="fox")] == [3]
        assert len(await store.page(owned_by="alice")) == 5  # owned_by alone restricts nothing
    finally:
        await store.close()


async def test_postgres_search_past_the_newest_window_matches_a_plain_scan(postgres_url: str) -> None:
    """More rows than the search window: matches newer and older than its floor, in one page, in order."""
    from app.storage.postgres import SEARCH_WINDOW

    store = await store_for(postgres_url)
    await store.close()
    import psycopg

    rows = SEARCH_WINDOW + 40
    prompts = [("rare heron" if i % 997 == 0 else "common fox" if i % 3 else "common owl") + f" #{i}"
               for i in range(rows)]
    with psycopg.connect(postgres_url) as conn, conn.cursor() as cur, cur.copy(
            "COPY generations (timestamp, prompt, parameters_json, status) FROM STDIN") as copy:
        for prompt in prompts:
            copy.write_row(("2026-11-01T00:00:00Z", prompt, "{}", "SUCCESS"))
    store = await store_for(postgres_url)
    try:
        def expected(word: str, limit: int, before: int | None = None) -> list[int]:
            ids = [i + 1 for i, p in enumerate(prompts) if word in p.split()[1] and (before is None or i + 1 < before)]
            return sorted(ids, reverse=True)[:limit]

        for word, limit, before in [("heron", 20, None), ("owl", 20, None), ("heron", 5, 9000), ("fox", 3, 41)]:
            got = [g.id for g in await store.page(query=word, limit=limit, before_id=before)]
            assert got == expected(word, limit, before), (word, limit, before)
        assert len(expected("heron", 20)) == 11  # the window holds only some of them: both steps ran
        assert await store.page(query="giraffe") == []
    finally:
        await store.close()


async def test_postgres_search_plan_follows_the_statistics(postgres_url: str) -> None:
    """After ANALYZE, rare and absent words read through the index and common ones walk the newest ids;
    either way the page is the same as a plain scan's, filters included."""
    from app.storage.postgres import SEARCH_WINDOW

    store = await store_for(postgres_url)
    await store.close()
    import psycopg

    rows = SEARCH_WINDOW * 3
    prompts = [("rare heron" if i % 2999 == 0 else "common fox" if i % 3 else "common owl") + f" #{i}"
               for i in range(rows)]
    statuses = ["HTTP_429" if i % 500 == 0 else "SUCCESS" for i in range(rows)]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        with conn.cursor() as cur, cur.copy(
                "COPY generations (timestamp, prompt, parameters_json, status) FROM STDIN") as copy:
            for prompt, status in zip(prompts, statuses, strict=True):
                copy.write_row(("2026-11-01T00:00:00Z", prompt, "{}", status))
        conn.execute("ANALYZE generations")
    store = await store_for(postgres_url)
    try:
        assert await store.search_plan("heron", fresh=True) == "index"
        assert await store.search_plan("giraffe") == "index"
        assert await store.search_plan("fox") == "walk"
        assert await store.search_plan("common fox") == "walk"
        assert await store.search_plan("co") == "walk"  # a prefix of a common word is common
        assert await store.search_plan("owl", status="HTTP_429") == "index"  # a third, then one in 500
        assert await store.search_plan("fox", status="SUCCESS") == "walk"
        assert await store.search_plan("common heron") == "index"  # a rare word with a common one

        def expected(word: str, limit: int, status: str | None = None, before: int | None = None) -> list[int]:
            ids = [i + 1 for i, p in enumerate(prompts)
                   if all(any(t.startswith(w) for t in p.replace("#", " ").split()) for w in word.split())
                   and (status is None or statuses[i] == status) and (before is None or i + 1 < before)]
            return sorted(ids, reverse=True)[:limit]

        for word, limit, status, before in [("heron", 20, None, None), ("heron", 3, None, 12_000),
                                             ("owl", 20, "HTTP_429", None), ("fox", 20, None, None),
                                             ("fox", 5, "SUCCESS", 401), ("common her", 20, None, None),
                                             ("fox 2", 20, None, None), ("fox giraffe", 20, None, None)]:
            got = [g.id for g in await store.page(query=word, limit=limit, status=status, before_id=before)]
            assert got == expected(word, limit, status, before), (word, limit, status, before)
        assert len(expected("heron", 20)) == 11
        assert await store.page(query="giraffe") == []
    finally:
        await store.close()


async def test_an_upload_link_is_live_and_claimed_only_while_its_row_is_pending(database_url: str) -> None:
    """Both engines: a cancelled link's row ends it (its page and its PUT say 410); a claim marks it used."""
    store = await store_for(database_url)
    try:
        now = time.time()
        for key in ("a" * 64, "b" * 64):
            row = await store.insert_pending("an upload", {}, "alice")
            await store.add_upload_link(key, row.id, "alice", now + 60)
        assert await store.upload_link_live("a" * 64, now)
        assert not await store.upload_link_live("a" * 64, now + 61)  # expired
        await store.end_pending(1, "CANCELLED", "cancelled with pix_cancel")
        assert not await store.upload_link_live("a" * 64, now)
        assert await store.claim_upload_link("a" * 64, now) is None
        assert await store.claim_upload_link("b" * 64, now) == (2, "alice")
        assert not await store.upload_link_live("b" * 64, now)  # used
        assert await store.claim_upload_link("b" * 64, now) is None
    finally:
        await store.close()
