"""History: list_generations (paging, filters, search), get_generation, migrations, progress."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from app.pixazo.simulator import Fault, Simulator
from app.storage import postgres
from app.storage.database import engine_of, sqlite_path
from app.storage.records import MIGRATIONS, SCHEMA_VERSION
from tests.conftest import http_client, in_memory_client, live_server, make_settings, store_for


async def test_list_generations_pages_newest_first_and_filters(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none")
    async with in_memory_client(settings) as client:
        for i in range(5):
            if i == 2:
                sim.push(Fault(kind="http", status=500))
            await client.call_tool("pix_generate", {"prompt": f"picture number {i}"})
        first = (await client.call_tool("list_generations", {"limit": 2})).structured_content
        second = (await client.call_tool("list_generations",
                                         {"limit": 2, "before_id": first["next_before_id"]})).structured_content
        third = (await client.call_tool("list_generations",
                                        {"limit": 2, "before_id": second["next_before_id"]})).structured_content
        failed = (await client.call_tool("list_generations", {"status": "HTTP_500"})).structured_content
    assert [g["id"] for g in first["generations"]] == [5, 4]
    assert [g["id"] for g in second["generations"]] == [3, 2]
    assert [g["id"] for g in third["generations"]] == [1]
    assert third["next_before_id"] is None
    assert [g["prompt"] for g in failed["generations"]] == ["picture number 2"]
    # other callers read the message the caller got, never Pixazo's body ("Simulated failure")
    assert failed["generations"][0]["error"] == (
        "Pixazo answered HTTP 500: Pixazo failed on its side. You may try again in a minute.")
    assert "Simulated failure" not in str(failed)


async def test_query_searches_prompt_words(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none")
    async with in_memory_client(settings) as client:
        for prompt in ["a red fox in snow", "a blue whale", "foxes at dawn", "Red barn"]:
            await client.call_tool("pix_generate", {"prompt": prompt})

        async def search(query: str, **extra: Any) -> list[str]:
            page = await client.call_tool("list_generations", {"query": query, **extra})
            return [g["prompt"] for g in page.structured_content["generations"]]

        assert await search("fox") == ["foxes at dawn", "a red fox in snow"]
        assert await search("red") == ["Red barn", "a red fox in snow"]
        assert await search("red fox") == ["a red fox in snow"]
        assert await search("fox", limit=1, before_id=3) == ["a red fox in snow"]
        assert await search('" OR 1=1 --') == []  # FTS syntax from callers is neutralised
        assert await search("giraffe") == []


async def test_get_generation_and_unknown_ids(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none")
    async with in_memory_client(settings) as client:
        made = await client.call_tool("pix_generate", {"prompt": "a kite", "ticket": "T-1"})
        got = await client.call_tool("get_generation", {"id": made.structured_content["id"]})
        missing = await client.call_tool("get_generation", {"id": 4242})
    assert got.structured_content["prompt"] == "a kite"
    assert got.structured_content["parameters"]["ticket"] == "T-1"
    assert got.structured_content["image_sha256"]
    assert missing.is_error
    assert "No generation with id 4242." in missing.content[0].text


async def test_history_tools_are_read_only_and_declare_output_schemas(tmp_path: Path, sim: Simulator) -> None:
    async with in_memory_client(make_settings(tmp_path, sim.url)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    for name in ("list_generations", "get_generation"):
        assert tools[name].annotations is not None
        assert tools[name].annotations.read_only_hint is True
        assert tools[name].output_schema is not None
    assert tools["pix_generate"].output_schema is not None
    assert "resource_uri" in tools["pix_generate"].output_schema["properties"]


OLD_COLUMNS = ("timestamp", "prompt", "parameters_json", "image_url", "status")


def old_database(url: str, version: int, rows: list[tuple[str | None, ...]],
                 columns: tuple[str, ...] = OLD_COLUMNS) -> None:
    """A database at an earlier schema version, made by that version's own migrations, holding `rows`
    (values for `columns`, which that version must have)."""
    insert = (f"INSERT INTO generations ({', '.join(columns)})"  # noqa: S608 - column names from the tests
              f" VALUES ({', '.join('?' for _ in columns)})")
    if engine_of(url) == "sqlite":
        with sqlite3.connect(sqlite_path(url)) as conn:
            for script in MIGRATIONS[:version]:
                conn.executescript(script)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.executemany(insert, rows)
        conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                   " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        for number, script in enumerate(postgres.MIGRATIONS[:version], start=1):
            pg.execute(script.encode())
            pg.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
        with pg.cursor() as cur:
            cur.executemany(insert.replace("?", "%s").encode(), rows)


async def test_migration_from_the_core_schema_keeps_rows_and_indexes_them(database_url: str) -> None:
    old_database(database_url, 1, [
        ("2026-01-01T00:00:00Z", "an old lighthouse", '{"seed": 1}', "https://x.r2.dev/1.png", "SUCCESS"),
        ("2026-01-02T00:00:00Z", "an old mill", '{"seed": 2}', None, "HTTP_500")])
    store = await store_for(database_url)
    try:
        assert await store.schema_version() == SCHEMA_VERSION
        everything = await store.page(limit=10)
        found = await store.page(query="lighthouse")
    finally:
        await store.close()
    assert [(g.prompt, g.status, g.parameters) for g in everything] == [
        ("an old mill", "HTTP_500", {"seed": 2}), ("an old lighthouse", "SUCCESS", {"seed": 1})]
    assert everything[1].image_url == "https://x.r2.dev/1.png"
    assert [g.prompt for g in found] == ["an old lighthouse"]


async def test_progress_reaches_a_remote_client(tmp_path: Path) -> None:
    async with Simulator(latency=1.0) as sim:
        settings = make_settings(tmp_path, sim.url, progress_interval_s=0.2)
        seen: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total, message))

        async with live_server(settings) as live, http_client(live) as client:
            result = await client.call_tool("pix_generate", {"prompt": "slow"}, progress_callback=on_progress)
    assert not result.is_error
    messages = [m for _, _, m in seen]
    gen = f"Generation {result.structured_content['id']}: "  # every message names its generation
    assert messages[0] == gen + "generating with Pixazo"
    assert any(m and m.startswith(gen + "sent to Pixazo, waiting for the image (") for m in messages)
    assert messages[-1] == gen + "finished SUCCESS"
    values = [p for p, _, _ in seen]
    assert values == sorted(values)
    assert len(set(values)) == len(values)


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
async def test_migration_from_every_earlier_version(database_url: str, version: int) -> None:
    old_database(database_url, version, [
        ("2026-01-01T00:00:00Z", "kept across versions", '{"seed": 5}', None, "PENDING")])
    store = await store_for(database_url)
    try:
        assert await store.schema_version() == SCHEMA_VERSION
        # A row from before owners were recorded has no owner: nobody holds it, so it is interrupted.
        await store.renew_lease(30)
        assert await store.reap_lapsed([]) == 1
        (row,) = await store.page(query="versions")
    finally:
        await store.close()
    assert (row.prompt, row.parameters, row.status, row.caller) == (
        "kept across versions", {"seed": 5}, "INTERRUPTED", None)


async def test_a_status_filter_longer_than_any_status_is_refused(tmp_path: Path, sim: Simulator) -> None:
    async with in_memory_client(make_settings(tmp_path, sim.url)) as client:
        refused = await client.call_tool("list_generations", {"status": "S" * 41})
        accepted = await client.call_tool("list_generations", {"status": "DOWNLOAD_FAILED"})
    assert refused.is_error
    assert "at most 40 characters" in refused.content[0].text
    assert not accepted.is_error
