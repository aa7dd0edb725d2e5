"""/healthz tells whether a write can succeed; reads never queue behind a blocked write."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2

from app.pixazo.simulator import Simulator
from app.storage.records import GenerationStore
from tests.conftest import http_client, live_server, make_settings, small_filesystem


@contextmanager
def write_lock_held(db_path: Path) -> Iterator[None]:
    """Another connection (as another process would) holds the database's write lock."""
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_reads_answer_while_a_write_waits_for_the_lock(tmp_path: Path) -> None:
    store = await GenerationStore.open(tmp_path / "pixazo.db")
    try:
        first = await store.insert_pending("already there", {"seed": 1}, "alice")
        with write_lock_held(tmp_path / "pixazo.db"):
            blocked = asyncio.create_task(store.insert_pending("waits for the lock", {}, "alice"))
            await asyncio.sleep(0)  # the insert is now queued on the writer connection
            got = await store.get(first.id)
            page = await store.page(limit=5)
            facets = await store.facets()
            counted = await store.count_since("alice", "2000-01-01", "RATE_LIMITED")
            # Every read came back while the write was still stuck behind the other connection's lock.
            assert not blocked.done()
        written = await asyncio.wait_for(blocked, 10)
        assert [g.prompt for g in await store.page(limit=5)] == ["waits for the lock", "already there"]
    finally:
        await store.close()
    assert got is not None
    assert got.prompt == "already there"
    assert [g.id for g in page] == [first.id]
    assert facets == (["alice"], ["PENDING"])
    assert counted == 1
    assert written.id == first.id + 1


async def test_healthz_reports_a_held_write_lock_while_reads_still_answer(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none")
    async with live_server(settings) as live, http_client(live) as client:
        made = await client.call_tool("pix_generate", {"prompt": "before the lock"})
        async with httpx2.AsyncClient(base_url=live.url) as http:
            before = await http.get("/healthz")
            with write_lock_held(settings.db_path):
                locked = await http.get("/healthz")
                listed = await client.call_tool("list_generations", {})
                got = await client.call_tool("get_generation", {"id": made.structured_content["id"]})
                gallery = await http.get("/gallery")
                image = await http.get("/images/1")
            after = await http.get("/healthz")
    assert before.status_code == 200
    assert before.json()["database"] == "ok"
    assert locked.status_code == 503
    assert locked.json()["status"] == "unavailable"
    assert "write lock is held" in locked.json()["database"]
    assert [g["prompt"] for g in listed.structured_content["generations"]] == ["before the lock"]
    assert got.structured_content["prompt"] == "before the lock"
    assert (gallery.status_code, image.status_code) == (200, 200)
    assert "before the lock" in gallery.text
    assert after.status_code == 200


def garble(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.write(os.urandom(size))


async def test_healthz_reports_a_damaged_database(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, inline_image="none")
    async with live_server(settings) as live, http_client(live) as client:
        for i in range(3):
            await client.call_tool("pix_generate", {"prompt": f"row {i}"})
        async with httpx2.AsyncClient(base_url=live.url) as http:
            assert (await http.get("/healthz")).status_code == 200
            # The disk returns garbage for the database and its log from now on.
            for suffix in ("", "-wal"):
                await asyncio.to_thread(garble, Path(f"{settings.db_path}{suffix}"))
            damaged = await http.get("/healthz")
    assert damaged.status_code == 503
    assert damaged.json()["status"] == "unavailable"
    assert damaged.json()["database"] != "ok"


def fill(directory: Path) -> None:
    """Write until the filesystem refuses: ENOSPC."""
    with (directory / "filler").open("wb", buffering=0) as f:
        for _ in range(1 << 20):  # bounded: far more blocks than the small filesystem has
            try:
                f.write(b"\0" * 4096)
            except OSError:
                return
    raise AssertionError("the filesystem never filled up")


async def test_healthz_reports_a_full_disk(tmp_path: Path, sim: Simulator) -> None:
    with small_filesystem(tmp_path / "small", 1024) as small:
        settings = make_settings(tmp_path, sim.url, inline_image="none", db_path=small / "pixazo.db")
        async with live_server(settings) as live, http_client(live) as client:
            await client.call_tool("pix_generate", {"prompt": "before the disk filled"})
            async with httpx2.AsyncClient(base_url=live.url) as http:
                assert (await http.get("/healthz")).status_code == 200
                await asyncio.to_thread(fill, small)
                full = await http.get("/healthz")
                listed = await client.call_tool("list_generations", {})
    assert full.status_code == 503
    assert "full" in full.json()["database"]
    # reads still answer from what is there
    assert [g["prompt"] for g in listed.structured_content["generations"]] == ["before the disk filled"]
