"""Gallery sessions end on logout and when their caller is no longer configured (issue 11, point 3)."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from pathlib import Path

import httpx2
from pydantic import SecretStr

from app.identity.sessions import end_session, session_caller, start_session
from app.pixazo.simulator import Simulator
from app.settings import Settings
from tests.conftest import SESSION_SECRET, live_server, make_settings, store_for
from tests.test_team import ALICE, BOB, TOKENS

SECRET = SecretStr(SESSION_SECRET)


async def log_in(url: str, token: str) -> str:
    """Log in through the form; returns the session cookie's value."""
    async with httpx2.AsyncClient(timeout=30) as http:
        resp = await http.post(f"{url}/login", data={"token": token, "next": "/gallery"})
        assert resp.status_code == 303, resp.text
        return str(http.cookies["pixazo_session"])


async def opens(url: str, cookie: str) -> tuple[int, int]:
    """(gallery status, image route status) for a request carrying only this cookie.

    Image 1 does not exist: 404 means the session was accepted, 401 that it was not."""
    async with httpx2.AsyncClient(timeout=30, cookies={"pixazo_session": cookie}) as http:
        gallery = await http.get(f"{url}/gallery")
        image = await http.get(f"{url}/images/1")
    return gallery.status_code, image.status_code


def session_id(cookie: str) -> str:
    payload = cookie.split(".", 1)[0]
    return str(json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))["sid"])


async def test_a_cookie_copied_before_logout_opens_nothing_after_it(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS, session_secret=SECRET)
    async with live_server(settings) as live:
        cookie = await log_in(live.url, ALICE)
        other = await log_in(live.url, ALICE)  # the same caller in another browser
        before = await opens(live.url, cookie)
        async with httpx2.AsyncClient(timeout=30, cookies={"pixazo_session": cookie}) as http:
            logout = await http.post(f"{live.url}/logout")
        after = await opens(live.url, cookie)
        other_after = await opens(live.url, other)
    assert before == (200, 404)
    assert logout.status_code == 303
    assert after == (303, 401)
    assert other_after == (200, 404)  # logging out ends that session only


async def test_a_session_ends_when_its_caller_is_no_longer_configured(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS, session_secret=SECRET)
    async with live_server(settings) as live:
        alice = await log_in(live.url, ALICE)
        bob = await log_in(live.url, BOB)
    only_bob: Settings = settings.model_copy(update={"auth_tokens": SecretStr(f"bob:{BOB}")})
    async with live_server(only_bob) as live:
        alice_after = await opens(live.url, alice)
        bob_after = await opens(live.url, bob)
    assert alice_after == (303, 401)
    assert bob_after == (200, 404)  # sessions live in the database: a restart keeps them


async def test_the_database_keeps_only_a_hash_of_the_session_id(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS)
    async with live_server(settings) as live:
        cookie = await log_in(live.url, ALICE)
    sid = session_id(cookie)
    with sqlite3.connect(settings.db_path) as conn:
        rows = conn.execute("SELECT id_hash, caller, created_at, expires_at FROM sessions").fetchall()
        dump = "\n".join(conn.iterdump())
    conn.close()
    assert [(r[0], r[1]) for r in rows] == [(hashlib.sha256(sid.encode()).hexdigest(), "alice")]
    assert rows[0][2] < rows[0][3]
    assert sid not in dump


async def test_session_rows_behave_the_same_on_both_engines(database_url: str) -> None:
    store = await store_for(database_url)
    try:
        alive = await start_session(store, "alice")
        other = await start_session(store, "alice")
        expired = await start_session(store, "alice", ttl_s=-1)
        assert await session_caller(store, alive, {"alice", "bob"}) == "alice"
        assert await session_caller(store, alive, {"bob"}) is None  # alice is no longer configured
        assert await session_caller(store, expired, {"alice"}) is None
        assert await session_caller(store, "never-issued", {"alice"}) is None
        await end_session(store, alive)
        assert await session_caller(store, alive, {"alice"}) is None
        assert await session_caller(store, other, {"alice"}) == "alice"
    finally:
        await store.close()
