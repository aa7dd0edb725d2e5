"""Schema 9 on both engines: model, operation, lineage and cost on every row, and daily budgets admitted
atomically beside the limits (a real SQLite file, a real PostgreSQL database)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.protocol.results import GenerationRecord
from app.storage import records
from app.storage.database import RecordStore, engine_of, sqlite_path
from app.storage.rows import BUDGET_EXCEEDED, CallMeta
from tests.conftest import store_for
from tests.test_history import old_database

DAY = "2000-01-01"  # every row written by a test is after this: "today" for the budget
PRICE = 0.07


def schema_8(url: str) -> None:
    """A database as the previous release left it: schema 8, with two rows (one finished, one in flight)."""
    old_database(url, 8, [("2026-11-01T10:00:00.000Z", "an old lighthouse", '{"seed": 1}', "SUCCESS", "alice"),
                          ("2026-11-01T10:01:00.000Z", "an old call in flight", "{}", "PENDING", None)],
                 columns=("timestamp", "prompt", "parameters_json", "status", "caller"))


def index_names(url: str) -> set[str]:
    if engine_of(url) == "sqlite":
        with sqlite3.connect(sqlite_path(url)) as conn:
            found = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        conn.close()
        return found
    with psycopg.connect(url) as pg:
        return {r[0] for r in pg.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'generations'")}


async def admit(store: RecordStore, caller: str | None, budget: float | None, price: float | None = PRICE, *,
                per_minute: int | None = None, day_since: str = DAY, **meta: Any) -> Any:
    return await store.insert_admitted(
        "a fox", {"seed": 1}, caller, per_minute=per_minute, daily=None, minute_since=DAY, day_since=day_since,
        meta=CallMeta(cost_usd=price, **meta), budget_usd=budget)


async def test_schema_8_rows_get_the_defaults_of_sdxl_text_to_image(database_url: str) -> None:
    schema_8(database_url)
    store = await store_for(database_url)
    try:
        assert await store.schema_version() == records.SCHEMA_VERSION
        old = await store.get(1)
        in_flight = await store.get(2)
        assert old is not None
        assert in_flight is not None
        for row in (old, in_flight):
            assert (row.model, row.operation, row.parent_id, row.cost_usd, row.request_id) == (
                "sdxl", "generate", None, None, None)
        assert (old.prompt, old.status, old.caller) == ("an old lighthouse", "SUCCESS", "alice")
        assert await store.spend_since("alice", DAY) == 0.0  # an unknown price counts as nothing spent
        new = await store.insert_pending("after the upgrade", {}, meta=CallMeta("flux-schnell", parent_id=1))
        assert [g.id for g in await store.children(1)] == [new.id]
    finally:
        await store.close()
    assert {"generations_parent_id", "generations_pending_jobs"} <= index_names(database_url)


async def test_meta_is_written_and_public_shows_it_without_the_request_id(database_url: str) -> None:
    store = await store_for(database_url)
    try:
        parent = await store.insert_pending("a lighthouse", {"seed": 3}, "alice")
        meta = CallMeta(model="sdxl-lightning", operation="upscale", parent_id=parent.id, cost_usd=0.02)
        made = await store.insert_pending("a lighthouse", {"scale": 4}, "alice", meta=meta)
        admitted = (await admit(store, "alice", None, 0.03, model="flux-schnell", operation="inpaint",
                                parent_id=made.id)).generation
        await store.set_request_id(made.id, "job-secret-1")
        read = await store.get(made.id)
        plain = await store.get(parent.id)
    finally:
        await store.close()
    assert (made.model, made.operation, made.parent_id, made.cost_usd) == ("sdxl-lightning", "upscale", parent.id, 0.02)
    assert read is not None
    assert (read.model, read.operation, read.parent_id, read.cost_usd, read.request_id) == (
        "sdxl-lightning", "upscale", parent.id, 0.02, "job-secret-1")
    assert (admitted.status, admitted.model, admitted.operation, admitted.parent_id, admitted.cost_usd) == (
        "PENDING", "flux-schnell", "inpaint", made.id, 0.03)
    assert plain is not None
    assert (plain.model, plain.operation, plain.parent_id, plain.cost_usd) == ("sdxl", "generate", None, None)
    shown = read.public()
    assert {k: shown[k] for k in ("model", "operation", "parent_id", "cost_usd")} == {
        "model": "sdxl-lightning", "operation": "upscale", "parent_id": parent.id, "cost_usd": 0.02}
    assert "request_id" not in shown
    assert "job-secret-1" not in repr(shown)
    record = GenerationRecord.model_validate(shown)
    assert (record.model, record.operation, record.parent_id, record.cost_usd) == (
        "sdxl-lightning", "upscale", parent.id, 0.02)
    assert GenerationRecord.model_validate(plain.public()).model == "sdxl"


async def test_a_budget_is_reached_exactly_and_refused_calls_are_recorded(database_url: str) -> None:
    store = await store_for(database_url)
    try:
        first = await admit(store, "alice", 0.14)
        second = await admit(store, "alice", 0.14)
        assert (first.refused_by, second.refused_by) == (None, None)  # 0.07 + 0.07 fits 0.14 exactly
        third = await admit(store, "alice", 0.14)
        assert third.refused_by == "budget"
        row = third.generation
        assert (row.status, row.error, row.cost_usd, row.duration_ms, row.attempts) == (
            BUDGET_EXCEEDED, "budget", 0, 0, 0)
        assert row.finished_at is not None
        stored = await store.get(row.id)
        assert stored is not None
        assert (stored.status, stored.cost_usd) == (BUDGET_EXCEEDED, 0)
        assert await store.spend_since("alice", DAY) == pytest.approx(0.14)

        # A free call (or one of unknown price) still passes once the budget is spent; another caller's
        # spend is its own.
        assert (await admit(store, "alice", 0.14, 0.0)).refused_by is None
        assert (await admit(store, "alice", 0.14, None)).refused_by is None
        assert (await admit(store, "bob", 0.14)).refused_by is None
        assert await store.spend_since("bob", DAY) == pytest.approx(PRICE)

        # A call that was not charged after all (finished with cost 0) gives its share back.
        await store.finish(first.generation.id, "HTTP_500", cost_usd=0.0)
        assert await store.spend_since("alice", DAY) == pytest.approx(PRICE)
        assert (await admit(store, "alice", 0.14)).refused_by is None
        assert (await admit(store, "alice", 0.14)).refused_by == "budget"
        # Only today's spend counts: yesterday's rows are before the day's start.
        assert (await admit(store, "alice", 0.14, day_since="2999-01-01")).refused_by is None
    finally:
        await store.close()


async def test_refused_rows_are_neither_spend_nor_calls_against_the_limits(database_url: str) -> None:
    store = await store_for(database_url)
    try:
        # Rows refused before anything was sent: even with a price on them, nothing was spent.
        await store.insert_pending("refused", {}, "alice", BUDGET_EXCEEDED, meta=CallMeta(cost_usd=5.0))
        await store.insert_pending("refused", {}, "alice", "RATE_LIMITED", meta=CallMeta(cost_usd=5.0))
        assert await store.spend_since("alice", DAY) == 0.0
        assert (await admit(store, "alice", 0.07)).refused_by is None
        assert (await admit(store, "alice", 0.07)).refused_by == "budget"
        usage = await store.usage("alice", DAY, DAY)
        assert (usage.minute, usage.day) == (1, 1)  # the admitted call only
        # The limits are checked before the budget: a caller over both hears about the limit.
        assert (await admit(store, "alice", 0.07, per_minute=1)).refused_by == "per-minute"
        # With neither limits nor budget the store just admits, with the call's meta.
        free = await store.insert_admitted("p", {}, "carol", per_minute=None, daily=None, minute_since=DAY,
                                           day_since=DAY, meta=CallMeta("flux-schnell", cost_usd=0.0))
        assert (free.refused_by, free.generation.status, free.generation.model) == (None, "PENDING", "flux-schnell")
        plain = await store.insert_admitted("p", {}, "carol", per_minute=None, daily=None, minute_since=DAY,
                                            day_since=DAY)
        assert (plain.generation.model, plain.generation.cost_usd) == ("sdxl", None)
    finally:
        await store.close()


async def test_replicas_admitting_at_once_never_pass_the_budget(database_url: str) -> None:
    """Two stores (two replicas, each its own pool) admit one caller's priced calls concurrently."""
    stores = [await store_for(database_url) for _ in range(2)]
    try:
        outcomes = await asyncio.gather(*(admit(stores[i % 2], "alice", 0.7) for i in range(24)))
        refusals = [a.refused_by for a in outcomes]
        assert refusals.count(None) == 10  # 10 x 0.07 = 0.70: exactly the budget, no more
        assert set(refusals) == {None, "budget"}
        assert await stores[1].spend_since("alice", DAY) == pytest.approx(0.7)
    finally:
        for store in stores:
            await store.close()


async def test_finish_keeps_the_price_unless_told_and_keeps_the_request_id(database_url: str) -> None:
    store = await store_for(database_url)
    try:
        made = await store.insert_pending("p", {}, meta=CallMeta(cost_usd=PRICE))
        await store.set_request_id(made.id, "job-1")
        done = await store.finish(made.id, "SUCCESS", image_url="https://x.r2.dev/a.png")
        assert (done.cost_usd, done.request_id) == (PRICE, "job-1")
        assert (await store.finish(made.id, "HTTP_500", cost_usd=0.0)).cost_usd == 0.0
        assert (await store.finish(made.id, "SUCCESS", cost_usd=0.12)).cost_usd == 0.12
        unknown = await store.insert_pending("p", {})
        assert (await store.finish(unknown.id, "SUCCESS")).cost_usd is None
        # A request id is recorded only on a call still in flight.
        await store.set_request_id(unknown.id, "job-too-late")
        found = await store.get(unknown.id)
        assert found is not None
        assert found.request_id is None
    finally:
        await store.close()


async def test_children_are_the_rows_made_from_a_generation_newest_first(database_url: str) -> None:
    store = await store_for(database_url)
    try:
        parent = await store.insert_pending("a lighthouse", {})
        other = await store.insert_pending("a whale", {})
        kids = [await store.insert_pending("edit", {}, meta=CallMeta(operation="upscale", parent_id=parent.id))
                for _ in range(3)]
        await store.insert_pending("edit of another", {}, meta=CallMeta(parent_id=other.id))
        grandchild = await store.insert_pending("edit of an edit", {}, meta=CallMeta(parent_id=kids[0].id))
        assert [g.id for g in await store.children(parent.id)] == [k.id for k in reversed(kids)]
        assert [g.id for g in await store.children(parent.id, limit=2)] == [kids[2].id, kids[1].id]
        assert [g.id for g in await store.children(kids[0].id)] == [grandchild.id]
        assert await store.children(grandchild.id) == []
        assert {g.operation for g in await store.children(parent.id)} == {"upscale"}
    finally:
        await store.close()


async def test_migrate_copies_model_lineage_cost_and_request_id(tmp_path: Path, postgres_url: str) -> None:
    from app.ops.migrate import migrate_rows

    source = f"sqlite:///{tmp_path / 'old.db'}"
    store = await store_for(source)
    try:
        parent = await store.insert_pending("a lighthouse", {})
        await store.finish(parent.id, "SUCCESS", cost_usd=PRICE)
        child = await store.insert_pending("upscaled", {}, meta=CallMeta("flux-schnell", "upscale", parent.id, 0.5))
        await store.set_request_id(child.id, "job-9")
    finally:
        await store.close()
    report = await asyncio.to_thread(migrate_rows, source, postgres_url)
    assert report.verified
    target = await store_for(postgres_url)
    try:
        copied = await target.get(child.id)
        first = await target.get(parent.id)
    finally:
        await target.close()
    assert copied is not None
    assert (copied.model, copied.operation, copied.parent_id, copied.cost_usd, copied.request_id) == (
        "flux-schnell", "upscale", parent.id, 0.5, "job-9")
    assert first is not None
    assert (first.model, first.cost_usd) == ("sdxl", PRICE)
