"""The OAuth sign-in page in a real browser (Debian's Chromium, driven by Playwright): a wrong token,
then the right one, and the browser really follows the redirect back to the client (the page's CSP
form-action must allow it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from playwright.async_api import Browser, Route, expect
from pydantic import SecretStr

from app.pixazo.simulator import Simulator
from tests.conftest import LiveServer, free_port, live_server, make_settings, needs_chromium
from tests.oauth_helpers import REDIRECT, Grant, mcp_status

ALICE = "alice-team-token-0123456789"

pytestmark = needs_chromium


@pytest.fixture
async def server(tmp_path: Path, sim: Simulator) -> AsyncIterator[LiveServer]:
    port = free_port()
    settings = make_settings(tmp_path, sim.url, auth_tokens=SecretStr(f"alice:{ALICE}"),
                             public_url=f"http://127.0.0.1:{port}")
    async with live_server(settings, port=port) as live:
        yield live


async def test_signing_in_through_the_page_in_chromium(browser: Browser, server: LiveServer) -> None:
    grant = Grant(server.url)
    async with httpx2.AsyncClient(timeout=30) as http:
        assert (await grant.register(http, client_name="Claude")).status_code == 201
    context = await browser.new_context()
    page = await context.new_page()
    arrived: list[str] = []

    async def client_callback(route: Route) -> None:  # the client's redirect URI, answered in the browser
        arrived.append(route.request.url)
        await route.fulfill(status=200, content_type="text/plain", body="connected")

    await page.route(REDIRECT + "*", client_callback)
    response = await page.goto(grant.authorize_url())
    assert response is not None
    assert response.url.startswith(server.url + "/oauth/signin?request=")
    assert "frame-ancestors 'none'" in (await response.header_value("content-security-policy") or "")
    assert await response.header_value("x-frame-options") == "DENY"
    await expect(page.locator("#client-name")).to_have_text("Claude")
    await expect(page.locator("#redirect-host")).to_have_text("127.0.0.1")

    await page.fill("input[name=token]", "alice-team-token-but-wrong")
    await page.click("button[name=decision][value=allow]")
    await expect(page.locator("#signin-error")).to_have_text("That token is not valid.")
    assert arrived == []

    await page.fill("input[name=token]", ALICE)
    await page.click("button[name=decision][value=allow]")
    await expect(page.locator("body")).to_have_text("connected")
    (url,) = arrived
    query = parse_qs(urlsplit(url).query)
    assert query["state"] == [grant.state]
    assert query["iss"] == [server.url]
    async with httpx2.AsyncClient(timeout=30) as http:
        tokens = (await grant.exchange(http, query["code"][0])).json()
        assert await mcp_status(http, server.url, tokens["access_token"]) == 200
    await context.close()
