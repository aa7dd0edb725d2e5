"""The gallery in a real browser: Debian's Chromium, driven headless by Playwright, against the real
server and the simulator, with generations made by an MCP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from playwright.async_api import Browser, Page, expect
from pydantic import SecretStr

from app.pixazo.simulator import Fault, Simulator
from tests.conftest import LiveServer, http_client, live_server, make_settings, needs_chromium

TOKEN = "gallery-token-alice-0123456789"
HOSTILE = '<img src=x onerror="document.title=\'pwned\'"><b>bold</b> & "quotes"'

pytestmark = needs_chromium


@pytest.fixture
async def server(tmp_path: Path, sim: Simulator) -> AsyncIterator[LiveServer]:
    settings = make_settings(tmp_path, sim.url, auth_tokens=SecretStr(f"alice:{TOKEN},bob:bob-token-0123456789xyz"))
    async with live_server(settings) as live:
        async with http_client(live, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            for prompt in ["a red fox in the snow", "a lighthouse at dusk", HOSTILE]:
                await client.call_tool("pix_generate", {"prompt": prompt})
            sim.push(Fault(kind="http", status=500, body='{"error": "GPU on fire"}'))
            await client.call_tool("pix_generate", {"prompt": "a failed attempt"})
        async with http_client(live, headers={"Authorization": "Bearer bob-token-0123456789xyz"}) as client:
            await client.call_tool("pix_generate", {"prompt": "bob's red balloon"})
        yield live


async def login(page: Page, live: LiveServer) -> None:
    await page.goto(live.url + "/gallery")
    await expect(page).to_have_url(f"{live.url}/login?next=/gallery")
    await page.fill("#token", TOKEN)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{live.url}/gallery")


async def test_log_in_browse_search_open_and_log_out(browser: Browser, server: LiveServer) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = await context.new_page()

    # a wrong token is refused
    await page.goto(server.url + "/login")
    await page.fill("#token", "not-a-valid-token-at-all")
    await page.click("button[type=submit]")
    await expect(page.locator("#login-error")).to_have_text("That token is not valid.")

    await login(page, server)
    response = await page.reload()
    assert response is not None
    assert "frame-ancestors 'none'" in (await response.header_value("content-security-policy") or "")
    cards = page.locator("#grid .card")
    await expect(cards).to_have_count(5)
    await expect(page.locator("header .who")).to_contain_text("alice")
    first = cards.first  # newest first
    await expect(first.locator(".prompt")).to_have_text("bob's red balloon")
    await expect(first).to_contain_text("bob")
    failed = page.locator(".card", has_text="a failed attempt")
    await expect(failed.locator(".status")).to_have_text("HTTP_500")
    # the caller's message, never Pixazo's body ("GPU on fire" stays in the operators' column)
    await expect(failed.locator(".error")).to_have_text(
        "Pixazo answered HTTP 500: Pixazo failed on its side. You may try again in a minute.")
    # every thumbnail really loaded (each is made from a real-size image on its first view: wait for it)
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#grid img')].every(i => i.complete)", timeout=20_000)
    loaded = await page.eval_on_selector_all("#grid img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
    assert loaded == [True] * 4

    # a prompt containing HTML renders as text
    hostile = page.locator(".card .prompt", has_text="<b>bold</b>")
    await expect(hostile).to_have_text(HOSTILE)
    assert await page.locator(".card .prompt b").count() == 0
    assert await page.title() != "pwned"

    # search, then filter by caller
    await page.fill("input[name=q]", "red")
    await page.click("form.filters button")
    await expect(cards).to_have_count(2)
    await page.select_option("select[name=caller]", "alice")
    await page.click("form.filters button")
    await expect(cards).to_have_count(1)
    await expect(cards.first.locator(".prompt")).to_have_text("a red fox in the snow")

    # the detail page: the full image, every parameter, the upstream URL, and the copy button
    await cards.first.locator("a.thumb").click()
    await expect(page.locator("h1")).to_have_text("Generation 1")
    assert await page.eval_on_selector("#full", "i => i.complete && i.naturalWidth > 0")
    for name in ("width", "height", "num_steps", "guidance_scale", "seed"):
        await expect(page.locator("dt", has_text=name)).to_have_count(1)
    await expect(page.locator("dd a[href^='http://127.0.0.1']")).to_have_count(1)
    await page.click("#copy")
    await expect(page.locator("#copied")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == "a red fox in the snow"

    # log out: the gallery is closed again, and so are the images
    await page.click("#logout")
    await expect(page).to_have_url(f"{server.url}/login")
    await page.goto(server.url + "/gallery/1")
    await expect(page).to_have_url(f"{server.url}/login?next=/gallery/1")
    response = await page.goto(server.url + "/images/1")
    assert response is not None
    assert response.status == 401
    await context.close()


async def test_the_session_cookie_is_signed_httponly_and_strict(browser: Browser, server: LiveServer) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    await login(page, server)
    (cookie,) = [c for c in await context.cookies() if c["name"] == "pixazo_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    # a forged cookie is not a session
    async with httpx2.AsyncClient(cookies={"pixazo_session": cookie["value"][:-4] + "AAAA"}) as http:
        forged = await http.get(server.url + "/gallery")
    assert forged.status_code == 303
    await context.close()


async def test_it_fits_a_phone_screen(browser: Browser, server: LiveServer) -> None:
    context = await browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                        is_mobile=True, has_touch=True)
    page = await context.new_page()
    await login(page, server)
    await expect(page.locator("#grid .card")).to_have_count(5)
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    columns = await page.evaluate(
        "getComputedStyle(document.querySelector('#grid')).gridTemplateColumns.split(' ').length")
    assert columns == 2
    await page.goto(server.url + "/gallery/2")
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    await context.close()
