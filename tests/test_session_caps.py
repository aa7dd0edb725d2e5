"""Legacy /mcp sessions and /sse streams are capped per caller and in all (issue 11, point 9)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx2

from app.pixazo.simulator import Simulator
from tests.conftest import http_client, live_server, make_settings
from tests.test_team import ALICE, BOB, INIT, MCP_HEADERS, TOKENS, bearer


async def open_session(http: httpx2.AsyncClient, url: str, token: str) -> httpx2.Response:
    return await http.post(url, json=INIT, headers={**MCP_HEADERS, **bearer(token)})


async def test_legacy_sessions_are_capped_per_caller_and_in_all(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS, max_sessions_per_caller=2, max_sessions=3)
    async with live_server(settings) as live, httpx2.AsyncClient(timeout=30) as http:
        alice = [await open_session(http, live.mcp_url, ALICE) for _ in range(3)]
        bob = [await open_session(http, live.mcp_url, BOB) for _ in range(2)]
        # A sessionless 2026-07-28 client is never counted.
        async with http_client(live, headers=bearer(ALICE), mode="2026-07-28") as modern:
            tools = await modern.list_tools()
        ended = await http.delete(live.mcp_url, headers={
            **MCP_HEADERS, **bearer(ALICE), "mcp-session-id": alice[0].headers["mcp-session-id"]})
        alice_again = await open_session(http, live.mcp_url, ALICE)
    assert [r.status_code for r in alice] == [200, 200, 429]
    assert "Too many open MCP sessions and SSE streams for this caller (limit 2)" in alice[2].json()["error"]["message"]
    assert [r.status_code for r in bob] == [200, 503]
    assert "limit" in bob[1].json()["error"]["message"]
    assert tools.tools
    assert ended.status_code == 200
    assert alice_again.status_code == 200


async def test_sse_streams_count_against_the_same_caps(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS, max_sessions_per_caller=2, max_sessions=10)
    async with live_server(settings) as live, httpx2.AsyncClient(timeout=30) as http:
        session = await open_session(http, live.mcp_url, ALICE)
        async with http.stream("GET", f"{live.url}/sse", headers=bearer(ALICE)) as first:
            first_status = first.status_code
            over = await http.get(f"{live.url}/sse", headers=bearer(ALICE))
            async with http.stream("GET", f"{live.url}/sse", headers=bearer(BOB)) as bob:
                bob_status = bob.status_code
        # The stream that ended no longer counts, once the server has seen it end.
        deadline = time.monotonic() + 10
        while True:
            async with http.stream("GET", f"{live.url}/sse", headers=bearer(ALICE)) as after:
                after_status = after.status_code
            if after_status != 429 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    assert session.status_code == 200
    assert first_status == 200
    assert over.status_code == 429
    assert "limit 2" in over.json()["error"]["message"]
    assert bob_status == 200
    assert after_status == 200
