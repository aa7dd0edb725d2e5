"""The whole server on either engine (PIXAZO_DATABASE_URL): tools, limits, /healthz, the legacy leg."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from pydantic import SecretStr

from app.identity.tokens import ConfigError
from app.pixazo.simulator import Simulator
from app.storage.database import engine_of
from app.web.app import create_app
from tests.conftest import SESSION_SECRET, http_client, live_server, make_settings, store_for

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def test_the_server_generates_searches_and_limits_on_either_engine(
        tmp_path: Path, sim: Simulator, database_url: str) -> None:
    settings = make_settings(tmp_path, sim.url, database_url=SecretStr(database_url), inline_image="none",
                             rate_limit_per_minute=2, session_secret=SecretStr(SESSION_SECRET))
    async with live_server(settings) as live:
        async with httpx2.AsyncClient() as http:
            health = (await http.get(live.url + "/healthz")).json()
        assert (health["database"], health["database_engine"]) == ("ok", engine_of(database_url))
        async with http_client(live) as client:
            made = [await client.call_tool("pix_generate", {"prompt": f"a lighthouse at dusk {i}"}) for i in range(3)]
            found = await client.call_tool("list_generations", {"query": "lightho dus"})
            status = await client.call_tool("pix_status", {})
    assert [r.is_error for r in made] == [False, False, True]
    assert "Rate limit reached: 2 generations per minute" in made[2].content[0].text
    assert [g["prompt"] for g in found.structured_content["generations"]] == [
        "a lighthouse at dusk 2", "a lighthouse at dusk 1", "a lighthouse at dusk 0"]
    assert status.structured_content["per_minute"]["remaining"] == 0
    store = await store_for(database_url)
    try:
        assert [g.status for g in await store.page()] == ["RATE_LIMITED", "SUCCESS", "SUCCESS"]
    finally:
        await store.close()


async def test_the_legacy_leg_is_stateless_with_postgresql_and_stateful_with_sqlite(
        tmp_path: Path, sim: Simulator, database_url: str) -> None:
    settings = make_settings(tmp_path, sim.url, database_url=SecretStr(database_url),
                             session_secret=SecretStr(SESSION_SECRET))
    async with live_server(settings) as live, httpx2.AsyncClient() as http:
        answer = await http.post(live.mcp_url, json=INITIALIZE, headers=MCP_HEADERS)
        assert answer.status_code == 200
        session = answer.headers.get("mcp-session-id")
        if engine_of(database_url) == "postgresql":
            assert session is None  # nothing held in one replica: any replica answers the next request
        else:
            assert session
        async with http_client(live, mode="legacy") as client:
            assert not (await client.call_tool("pix_generate", {"prompt": "legacy era"})).is_error


async def test_stateless_legacy_can_be_switched_on_for_sqlite(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, stateless_legacy=True)
    async with live_server(settings) as live, httpx2.AsyncClient() as http:
        answer = await http.post(live.mcp_url, json=INITIALIZE, headers=MCP_HEADERS)
    assert answer.status_code == 200
    assert answer.headers.get("mcp-session-id") is None


def test_postgresql_without_a_session_secret_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url=SecretStr("postgresql://pixazo:pw-123456@127.0.0.1:9/x"))
    with pytest.raises(ConfigError, match="PIXAZO_SESSION_SECRET must be set"):
        create_app(settings)
    env = {**os.environ, "PIXAZO_DATABASE_URL": "postgresql://pixazo:pw-123456@127.0.0.1:9/x",
           "PIXAZO_DB_PATH": str(tmp_path / "x.db")}
    env.pop("PIXAZO_SESSION_SECRET", None)
    done = subprocess.run([sys.executable, "-m", "app.cli", "serve"], env=env, capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "pixazo-mcp: PIXAZO_SESSION_SECRET must be set when PIXAZO_DATABASE_URL is PostgreSQL "
        "(every replica signs gallery sessions with it)"]
    assert "pw-123456" not in done.stdout + done.stderr


def test_an_unknown_database_url_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must start with sqlite:/// or postgresql://"):
        create_app(make_settings(tmp_path, database_url=SecretStr("mysql://x")))
