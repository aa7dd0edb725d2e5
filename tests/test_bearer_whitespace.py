"""One whitespace rule for bearer tokens on every route: whitespace around the token is dropped
(issue 11, point 14)."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from app.pixazo.simulator import Simulator
from tests.conftest import live_server, make_settings
from tests.test_team import ALICE, INIT, MCP_HEADERS, TOKENS


@pytest.mark.parametrize("header", [f"Bearer  {ALICE}", f"Bearer \t{ALICE}", f"bearer \t \t{ALICE}"])
async def test_whitespace_around_the_token_is_accepted_on_every_route(
        tmp_path: Path, sim: Simulator, header: str) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS)
    auth = {"Authorization": header}
    async with live_server(settings) as live, httpx2.AsyncClient(timeout=30) as http:
        mcp = await http.post(live.mcp_url, json=INIT, headers={**MCP_HEADERS, **auth})
        image = await http.get(f"{live.url}/images/1", headers=auth)  # 404: authorized, no such image
        metrics = await http.get(f"{live.url}/metrics", headers=auth)
        gallery = await http.get(f"{live.url}/gallery", headers=auth)
        login = await http.post(f"{live.url}/login", data={"token": f"  {ALICE}\t"})
    assert [mcp.status_code, image.status_code, metrics.status_code, gallery.status_code, login.status_code] == [
        200, 404, 200, 200, 303]


async def test_whitespace_inside_the_token_is_refused_on_every_route(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=TOKENS)
    auth = {"Authorization": f"Bearer {ALICE[:8]} {ALICE[8:]}"}
    async with live_server(settings) as live, httpx2.AsyncClient(timeout=30) as http:
        mcp = await http.post(live.mcp_url, json=INIT, headers={**MCP_HEADERS, **auth})
        image = await http.get(f"{live.url}/images/1", headers=auth)
        metrics = await http.get(f"{live.url}/metrics", headers=auth)
        gallery = await http.get(f"{live.url}/gallery", headers=auth, follow_redirects=False)
    assert [mcp.status_code, image.status_code, metrics.status_code, gallery.status_code] == [401, 401, 401, 303]
