"""The in-chat app (issue 21) in a real browser: Chromium (Playwright) loads a test host built on the
official MCP Apps host side (`@modelcontextprotocol/ext-apps`'s app-bridge, app-ui/src/test-host.js),
which renders ui://pixazo/app in a sandboxed iframe for a real pix_generate result from a real server
process; the host answers the app's server requests with the MCP SDK's client, as a chat client would.
The test clicks through regenerate, upscale, remove background, inpaint with a painted mask, download
and choose, and checks each row; a pending generation shows pending, then its image. No request leaves
the page."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from playwright.async_api import Browser, FrameLocator, Page

from app.pixazo.simulator import Simulator
from app.protocol.app import APP_URI, app_html
from tests.conftest import TEST_KEY, free_port, needs_chromium
from tests.test_process import server_process

pytestmark = [needs_chromium, pytest.mark.timeout(240)]

ROOT = Path(__file__).parent.parent
HOST = ROOT / "app-ui" / "dist" / "test-host.html"
ALICE = "alice-token-0123456789abcdef"
# The official ext-apps package bundles to about 590 KB (zod alone is 450 KB of it): the app's own
# code adds some 16 KB. The budget is the measured size with room for the app to grow.
MAX_APP_BYTES = 700 * 1024


def test_the_app_is_one_self_contained_file_within_its_budget() -> None:
    html = app_html()
    size = len(html.encode())
    print(f"ui://pixazo/app: {size} bytes")
    assert size <= MAX_APP_BYTES
    # Nothing loaded from elsewhere (the libraries' strings name URLs they never fetch; the browser test
    # below proves that no request leaves the page).
    for outside in ("<script src", "<link", "@import", "url(http", "<img src=\"http"):
        assert outside not in html, outside
    assert html.count("<script") == 1


def host_page() -> str:
    if not HOST.exists():
        message = f"{HOST} is missing: run `npm ci && npm run build` in app-ui/ (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return HOST.as_uri()


def rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT id, operation, parent_id, caller, status, parameters_json"
                                              " FROM generations ORDER BY id")]


def wire(result: Any) -> str:
    return json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True))


async def open_host(browser: Browser, client: Client, result: Any, arguments: dict[str, Any], *,
                    theme: str = "light", width: int = 1100, height: int = 900) -> tuple[Page, FrameLocator, list[str]]:
    page = await browser.new_page(viewport={"width": width, "height": height})
    outside: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(("file://", "data:", "about:"))
            else outside.append(request.url))

    async def call_tool(params: str) -> str:
        asked = json.loads(params)
        return wire(await client.call_tool(asked["name"], asked.get("arguments") or {}))

    async def read_resource(params: str) -> str:
        return wire(await client.read_resource(json.loads(params)["uri"]))

    await page.expose_function("hostCallTool", call_tool)
    await page.expose_function("hostReadResource", read_resource)
    await page.goto(host_page())
    html = (await client.read_resource(APP_URI)).contents[0].text  # type: ignore[union-attr]
    await page.evaluate("([html, args, result, theme]) => window.startHost(html, args, result, theme)",
                        [html, arguments, json.loads(wire(result)), theme])
    return page, page.frame_locator("#app"), outside


async def shown_id(app: FrameLocator) -> int:
    text = await app.locator("dl dd").first.text_content()
    return int((text or "#0").lstrip("#"))


async def until_shown(app: FrameLocator, previous: int, timeout_s: float = 60) -> int:
    """The id of the generation the app shows once it is another than `previous`, with its image."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await app.locator("#image").count() and (now := await shown_id(app)) != previous:
            await app.locator("#image").wait_for(state="visible")
            return now
        if await app.locator("#status.error").count():
            raise AssertionError(await app.locator("#status").text_content())
        assert time.monotonic() < deadline, "the app never showed the new image"
        await asyncio.sleep(0.2)


async def test_the_app_renders_a_result_and_every_action_makes_its_row(tmp_path: Path, browser: Browser) -> None:
    port = free_port()
    env = {"PIXAZO_AUTH_TOKENS": f"alice:{ALICE}", "PIXAZO_PUBLIC_URL": f"http://127.0.0.1:{port}",
           "PIXAZO_ANSWER_WITHIN_S": "2", "PIXAZO_INLINE_IMAGE": "thumbnail", "PIXAZO_POLL_BASE_S": "0.1",
           "PIXAZO_POLL_CAP_S": "0.3", "PIXAZO_UPSTREAM_URL_FRESH_S": "0"}
    shots = Path(os.environ.get("PIXAZO_SCREENSHOTS_DIR", tmp_path))
    async with (
        Simulator(api_key=TEST_KEY) as sim,
        server_process(tmp_path, sim, port=port, **env) as (_, url),
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {ALICE}"}, timeout=httpx2.Timeout(30, read=120)) as http,
        Client(streamable_http_client(url + "/mcp", http_client=http)) as client,
    ):
        first = await client.call_tool("pix_generate", {"prompt": "a red fox in fresh snow, <b>bold</b>"})
        first_id = first.structured_content["id"]
        page, app, outside = await open_host(browser, client, first, {"prompt": "a red fox"})
        await app.locator("#image").wait_for(state="visible")
        assert await shown_id(app) == first_id
        assert (await app.locator("#image").get_attribute("alt") or "").startswith("a red fox in fresh snow")
        assert await app.locator("#prompt-text").text_content() == "a red fox in fresh snow, <b>bold</b>"  # as text
        await page.screenshot(path=str(shots / "app-desktop-light.png"))

        # Regenerate with an edited prompt and another seed.
        await app.locator("#edit-prompt").fill("a red fox in fresh snow at dusk")
        await app.locator("#edit-seed").fill("7")
        await app.locator("#regenerate").click()
        regenerated = await until_shown(app, first_id)
        # Upscale x2 (a queue job at Pixazo), from the regenerated image.
        await app.locator("#upscale-2").click()
        upscaled = await until_shown(app, regenerated)
        # Back to the regenerated one through the chain, then remove its background.
        await app.locator(f".chain button[data-id='{regenerated}']").click()
        await until_shown(app, upscaled)
        await app.locator("#remove-background").click()
        cut_out = await until_shown(app, regenerated)
        await app.locator("#outpaint").click()  # the cut-out, zoomed out
        outpainted = await until_shown(app, cut_out)
        # A variation of the regenerated image (another seed), then the first image, inpainted with a
        # mask painted with the pointer.
        await app.locator(f".chain button[data-id='{cut_out}']").click()
        await until_shown(app, outpainted)
        await app.locator(f".chain button[data-id='{regenerated}']").click()
        await until_shown(app, cut_out)
        await app.locator("#variation").click()
        variation = await until_shown(app, regenerated)
        await app.locator(f".chain button[data-id='{regenerated}']").click()
        await until_shown(app, variation)
        await app.locator(f".chain button[data-id='{first_id}']").click()
        await until_shown(app, regenerated)
        await app.locator("#inpaint").click()
        box = await app.locator("#mask").bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
        await page.mouse.down()
        await page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5, steps=12)
        await page.mouse.up()
        await app.locator("#inpaint-prompt").fill("a small bird")
        await app.locator("#inpaint-apply").click()
        inpainted = await until_shown(app, first_id)
        # Download and choose.
        await app.locator("#download").click()
        await app.locator("#choose").click()
        await page.wait_for_function("window.messages.length > 0 && window.downloads.length > 0")
        downloads = await page.evaluate("window.downloads")
        messages = await page.evaluate("window.messages")
        contexts = await page.evaluate("window.contexts")

        # The person's own image, through the app's file input (the bytes go through the host).
        own = tmp_path / "own.png"
        own.write_bytes(base64.b64decode(first.content[-1].data))  # type: ignore[union-attr]  # a real JPEG thumbnail
        await app.locator("#upload-file").set_input_files(str(own))
        uploaded = await until_shown(app, inpainted)

        # Dark theme at phone width, for the README.
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.evaluate("window.setTheme('dark')")
        await page.wait_for_timeout(300)
        await page.screenshot(path=str(shots / "app-phone-dark.png"))

        # A pending generation: shown pending, then done.
        sim.latency = 60
        pending = await client.call_tool("pix_generate", {"prompt": "a lighthouse", "wait": False})
        page2, app2, outside2 = await open_host(browser, client, pending, {"prompt": "a lighthouse"}, theme="dark")
        await app2.locator("#pending").wait_for(state="visible")
        await page2.screenshot(path=str(shots / "app-desktop-dark-pending.png"))
        sim.latency = 0
        sim.release()
        await until_shown(app2, 0)
        listed = await client.call_tool("list_generations", {"limit": 6})  # the newest six
        page3, app3, outside3 = await open_host(browser, client, listed, {}, width=390, height=844)
        cards = app3.locator("#grid .card")
        await cards.first.wait_for(state="visible")
        assert await cards.count() == 6
        for i in range(6):  # every card has its thumbnail (or says why not)
            await cards.nth(i).locator("img, .noimg").wait_for(state="visible")
        await page3.screenshot(path=str(shots / "app-phone-light-grid.png"))

    made = {r["id"]: r for r in rows(tmp_path / "pixazo.db")}
    assert (made[regenerated]["operation"], made[regenerated]["parent_id"]) == ("generate", first_id)
    assert json.loads(made[regenerated]["parameters_json"])["seed"] == 7
    assert (made[upscaled]["operation"], made[upscaled]["parent_id"]) == ("upscale", regenerated)
    assert (made[cut_out]["operation"], made[cut_out]["parent_id"]) == ("remove_background", regenerated)
    assert (made[outpainted]["operation"], made[outpainted]["parent_id"]) == ("outpaint", cut_out)
    assert (made[variation]["operation"], made[variation]["parent_id"]) == ("generate", regenerated)
    assert json.loads(made[variation]["parameters_json"])["seed"] != 7
    assert (made[inpainted]["operation"], made[inpainted]["parent_id"]) == ("inpaint", first_id)
    mask_id = json.loads(made[inpainted]["parameters_json"])["mask"]
    assert (made[mask_id]["operation"], made[mask_id]["parent_id"]) == ("mask", first_id)
    assert (made[uploaded]["operation"], made[uploaded]["parent_id"]) == ("upload", None)
    assert {r["caller"] for r in made.values()} == {"alice"}
    assert {r["status"] for r in made.values()} == {"SUCCESS"}
    assert downloads[0]["contents"][0]["uri"] == f"pixazo://generations/{inpainted}/image"
    assert f"generation {inpainted}" in messages[0]["content"][0]["text"]
    assert f"generation {inpainted}" in contexts[0]["content"][0]["text"]
    assert outside == outside2 == outside3 == []  # no request left the page
